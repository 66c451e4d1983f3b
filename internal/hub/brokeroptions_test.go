package hub

import (
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/config"
)

// TestBrokerOptions: the mqtt section's per-connection knobs reach the
// options the embedded broker is built with.
func TestBrokerOptions(t *testing.T) {
	type knobs struct {
		WriteQueue     int
		WriterIdle     time.Duration
		ReadBufferSize int
		MaxPacketSize  int
		ReceiveMaximum int
	}
	tests := []struct {
		name string
		yaml string
		want knobs
	}{
		{"defaults", "", knobs{320, 2 * time.Second, 1024, 256 << 10, 64}},
		{"configured", "mqtt: {write_queue: 100, writer_idle: 750ms, read_buffer_bytes: 4KiB, max_packet_size: 64KiB, receive_maximum: 16}\ningest: {max_payload_bytes: 32KiB, chunk_memory: 1MiB}",
			knobs{100, 750 * time.Millisecond, 4096, 64 << 10, 16}},
		{"smallest read buffer", "mqtt: {read_buffer_bytes: 256B, writer_idle: 1ms}", knobs{320, time.Millisecond, 256, 256 << 10, 64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			o := brokerOptions(cfg, nil)
			got := knobs{o.WriteQueue, o.WriterIdle, o.ReadBufferSize, o.MaxPacketSize, o.ReceiveMaximum}
			if got != tt.want {
				t.Errorf("broker options %+v, want %+v", got, tt.want)
			}
		})
	}
}
