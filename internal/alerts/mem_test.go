package alerts

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
)

var memRules = []RuleSpec{
	{Name: "hot", When: "f0 > 95", Clear: "f0 < 90"},
	{Name: "cold", When: "f1 < 5", For: "5m"},
	{Name: "band", When: "f2 outside 1..99"},
	{Name: "spiky", When: "f3 > 98", Count: "3 in 10m"},
	{Name: "rising", When: "rate(f4) > 50/s"},
	{Name: "f5", When: "f5 >= 99.9"},
	{Name: "f6", When: "f6 <= 0.1"},
	{Name: "mode", When: `mode == "fault"`},
	{Name: "quiet", When: "nodata(f7) > 1h"},
	{Name: "gone", When: "offline > 1h"},
}

func memService(b *testing.B) *Service {
	s := New(Deps{}, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	for _, spec := range memRules {
		spec.DeviceType = "T"
		r, err := ParseRule(spec)
		if err != nil {
			b.Fatal(err)
		}
		s.rules[r.Name] = r
	}
	s.rebuild()
	return s
}

func dataEvent(seq int64, dev string, v float64) events.Event {
	vals := map[string]any{"mode": "ok"}
	for f := 0; f < 10; f++ {
		vals[fmt.Sprintf("f%d", f)] = v
	}
	now := time.Unix(0, seq*int64(time.Millisecond))
	return events.Event{Seq: seq, Type: events.DeviceDataReceived, Time: now, DeviceID: dev, DeviceType: "T",
		Args: &events.DataReceived{Readings: []events.Reading{{Time: now, Values: vals}}}}
}

// BenchmarkStateMemory reports the evaluator's memory per (rule, device)
// pair: 10 rules on 10,000 devices, each device seen once (a reading, so
// that rate, count, no-data and timer state exist).
//
//	go test -run '^$' -bench BenchmarkStateMemory -benchtime 3x ./internal/alerts/
func BenchmarkStateMemory(b *testing.B) {
	const devices = 10000
	evs := make([]events.Event, devices)
	for i := range evs {
		evs[i] = dataEvent(int64(i+1), fmt.Sprintf("dev-%05d", i), 50)
	}
	var perPair float64
	for range b.N {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		s := memService(b)
		for _, e := range evs {
			s.observe(context.Background(), e)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		perPair = float64(m1.HeapAlloc-m0.HeapAlloc) / float64(devices*len(memRules))
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perPair, "bytes/pair")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEvaluate is the evaluator alone (no store): one data event of
// 11 fields through 10 rules, none firing.
func BenchmarkEvaluate(b *testing.B) {
	s := memService(b)
	const devices = 10000
	evs := make([]events.Event, devices)
	for i := range evs {
		evs[i] = dataEvent(int64(i+1), fmt.Sprintf("dev-%05d", i), 50)
	}
	for _, e := range evs {
		s.observe(context.Background(), e)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e := evs[i%devices]
		e.Seq = int64(devices + i + 1)
		s.observe(context.Background(), e)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
