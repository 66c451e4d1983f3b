package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/audit"
	"github.com/devicehub/devicehub/internal/commit"
)

func TestTmpListing(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var id int64
	now := time.Now()
	for b := 0; b < 2000; b++ {
		batch := make([]*commit.Change, 0, 250)
		for i := range 250 {
			id++
			dev := fmt.Sprintf("d%03d", i%100)
			if i%2 == 0 {
				dev = "big"
			}
			batch = append(batch, &commit.Change{DeviceID: dev, Message: &commit.Message{ID: id, Topic: "devices/x/data", Transport: "mqtt",
				Payload: []byte(`{"msg_id":"x","t":1}`), MsgID: fmt.Sprintf("p-%d", id), Accepted: true, ReceivedAt: now}})
		}
		if err := s.Commit(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	rows, _ := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at FROM messages WHERE 1=1 AND device_id = ? ORDER BY id DESC LIMIT ?`, "big", 100)
	for rows.Next() {
		var a, b, c int
		var d string
		rows.Scan(&a, &b, &c, &d)
		t.Log(d)
	}
	rows.Close()
	for _, dev := range []string{"big", "d001"} {
		for _, before := range []int64{0, id / 2} {
			t0 := time.Now()
			var n int
			for range 5 {
				m, err := s.ListMessages(ctx, audit.Query{DeviceID: dev, Before: before, Limit: 100})
				if err != nil {
					t.Fatal(err)
				}
				n = len(m)
			}
			t.Logf("%s before=%d: %d rows, %v per listing", dev, before, n, time.Since(t0)/5)
		}
	}
}
