package cluster_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/cluster"
	"github.com/devicehub/devicehub/internal/cluster/natstest"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/store/postgres"
	"github.com/devicehub/devicehub/internal/store/postgres/pgtest"
)

// openStores opens n stores on one fresh schema: n nodes' connections.
func openStores(t *testing.T, n int) []*postgres.Store {
	t.Helper()
	return pgtest.OpenStores(t, "fanout_test", "the fan-out tests", n)
}

// node is the write and event path of one hub node: a committer that
// publishes to the fan-out, which publishes to the node's bus.
type node struct {
	store  *postgres.Store
	bus    *eventlog.Bus
	fan    *cluster.Fanout
	commit *commit.Committer
	reg    *prometheus.Registry

	mu   sync.Mutex
	seen []int64 // seqs its subscriber got, in order
}

func (n *node) seqs() []int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]int64(nil), n.seen...)
}

func remoteEvents(t *testing.T, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "devicehub_cluster_fanout_remote_events_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// TestFanoutEveryEventOnceInOrder: three nodes commit concurrently; every
// node's bus delivers every committed event once, in Seq order, and the
// events of the other nodes come through JetStream (a 3-server cluster).
func TestFanoutEveryEventOnceInOrder(t *testing.T) {
	sts := openStores(t, 3)
	nc := natstest.Start(t, 3)
	name := "t" + hex.EncodeToString([]byte(t.Name()))[:8] + fmt.Sprint(time.Now().UnixNano()%1e6)
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	var nodes []*node
	g, gctx := errgroup.WithContext(ctx)
	for i, st := range sts {
		n := &node{store: st, reg: prometheus.NewRegistry()}
		n.bus = eventlog.NewBus(st, eventlog.BusOptions{}, log, nil)
		fan, err := cluster.New(ctx, cluster.Options{URLs: nc.URLs(), Node: fmt.Sprintf("node-%d", i), Name: name, Replicas: 3, Poll: time.Second},
			n.bus, st, 0, log, n.reg)
		if err != nil {
			t.Fatal(err)
		}
		n.fan = fan
		n.commit = commit.New(st, fan, commit.Options{}, log, nil)
		if _, err := n.bus.Subscribe(eventlog.SubscribeOptions{}, func(e events.Event) {
			n.mu.Lock()
			n.seen = append(n.seen, e.Seq)
			n.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
		g.Go(func() error { return n.bus.Run(gctx) })
		g.Go(func() error { return n.fan.Run(gctx) })
		g.Go(func() error { return n.commit.Run(gctx) })
		nodes = append(nodes, n)
	}

	const perNode = 300
	var writers errgroup.Group
	for i, n := range nodes {
		writers.Go(func() error {
			for j := range perNode {
				ev, err := commit.NewEvent(events.Event{Type: "test_event", Time: time.Now(), DeviceID: fmt.Sprintf("d%d-%d", i, j)})
				if err != nil {
					return err
				}
				if err := n.commit.Submit(ctx, &commit.Change{DeviceID: "x", Events: []commit.Event{ev}}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := writers.Wait(); err != nil {
		t.Fatal(err)
	}
	stored, err := sts[0].ReadEvents(ctx, 0, 10*perNode)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 3*perNode {
		t.Fatalf("%d events stored, want %d", len(stored), 3*perNode)
	}
	for i, n := range nodes {
		eventually.True(t, 30*time.Second, fmt.Sprintf("node %d saw every event", i), func() bool { return len(n.seqs()) >= len(stored) })
		got := n.seqs()
		if len(got) != len(stored) {
			t.Fatalf("node %d: %d events, want %d", i, len(got), len(stored))
		}
		for k, e := range stored {
			if got[k] != e.Seq {
				t.Fatalf("node %d: event %d is seq %d, want %d (stored order)", i, k, got[k], e.Seq)
			}
		}
		if r := remoteEvents(t, n.reg); r == 0 {
			t.Errorf("node %d: no event came through JetStream", i)
		}
	}
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestFanoutWithoutNATS: when NATS is gone, the nodes still see every
// event, from the log (the outbox), within the poll interval.
func TestFanoutWithoutNATS(t *testing.T) {
	sts := openStores(t, 2)
	nc := natstest.Start(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	g, gctx := errgroup.WithContext(ctx)
	var nodes []*node
	for i, st := range sts {
		n := &node{store: st}
		n.bus = eventlog.NewBus(st, eventlog.BusOptions{}, log, nil)
		fan, err := cluster.New(ctx, cluster.Options{URLs: nc.URLs(), Node: fmt.Sprintf("node-%d", i), Name: "nonats", Poll: 200 * time.Millisecond}, n.bus, st, 0, log, nil)
		if err != nil {
			t.Fatal(err)
		}
		n.fan = fan
		n.commit = commit.New(st, fan, commit.Options{}, log, nil)
		n.bus.Subscribe(eventlog.SubscribeOptions{}, func(e events.Event) {
			n.mu.Lock()
			n.seen = append(n.seen, e.Seq)
			n.mu.Unlock()
		})
		g.Go(func() error { return n.bus.Run(gctx) })
		g.Go(func() error { return n.fan.Run(gctx) })
		g.Go(func() error { return n.commit.Run(gctx) })
		nodes = append(nodes, n)
	}
	nc.Servers[0].Shutdown()
	for j := range 20 {
		ev, _ := commit.NewEvent(events.Event{Type: "test_event", Time: time.Now(), DeviceID: fmt.Sprint(j)})
		if err := nodes[0].commit.Submit(ctx, &commit.Change{DeviceID: "x", Events: []commit.Event{ev}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, 30*time.Second, "node 1 saw node 0's events from the log", func() bool { return len(nodes[1].seqs()) == 20 })
	got := nodes[1].seqs()
	for k := 1; k < len(got); k++ {
		if got[k] <= got[k-1] {
			t.Fatalf("out of order: %v", got)
		}
	}
	cancel()
	g.Wait()
}
