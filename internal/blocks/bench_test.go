package blocks

import (
	"encoding/binary"
	"math"
	"testing"
)

// BenchmarkEncode: bytes per numeric value of a block of a day of
// readings every 15 minutes (96, as the 10,000,000-reading query bench
// stores them), with the encoding Encode chooses and with each float
// encoding alone (xor-B/value: Gorilla's; decimal-B/value), and the time
// to encode and decode.
//
//	go test ./internal/blocks -run '^$' -bench Encode
func BenchmarkEncode(b *testing.B) {
	for _, c := range []struct {
		name string
		val  func(i int) map[string]any
	}{
		// The bench's payload (internal/bench.payload): 4 fields.
		{"bench-payload", func(k int) map[string]any {
			return map[string]any{"temperature": float64(k%40) + float64(k%100)/100, "humidity": float64(30+k%50) + 0.5,
				"pressure": 1013 + float64(k%10)/10, "battery": float64(100 - k%100)}
		}},
		// A slowly moving measurement at full float precision.
		{"sine", func(k int) map[string]any { return map[string]any{"x": 20 + 5*math.Sin(float64(k)/50)} }},
		// A counter.
		{"counter", func(k int) map[string]any { return map[string]any{"n": float64(k * 3)} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			rs := series(96, c.val)
			var enc []byte
			for b.Loop() {
				var err error
				if enc, err = Encode(rs); err != nil {
					b.Fatal(err)
				}
				if _, err := Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
			values := 0
			var xor, dec int
			for name := range rs[0].Values {
				vs := make([]float64, len(rs))
				for i := range rs {
					vs[i] = rs[i].Values[name].(float64)
				}
				values += len(vs)
				xor += len(appendXOR(nil, vs))
				if e, ints, ok := decimals(vs); ok {
					d := []byte{byte(e)}
					prev := int64(0)
					for _, n := range ints {
						d = binary.AppendVarint(d, n-prev)
						prev = n
					}
					dec += len(d)
				} else {
					dec += len(appendXOR(nil, vs))
				}
			}
			b.ReportMetric(float64(len(enc))/float64(values), "B/value")
			b.ReportMetric(float64(len(enc))/float64(len(rs)), "B/reading")
			b.ReportMetric(float64(xor)/float64(values), "xor-B/value")
			b.ReportMetric(float64(dec)/float64(values), "decimal-B/value")
		})
	}
}
