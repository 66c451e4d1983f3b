package fdlimit

import "testing"

func TestSplit(t *testing.T) {
	tests := []struct {
		name       string
		limit      uint64
		mqtt, http int
	}{
		{"common default", 1024, 672, 224},
		{"raised", 1 << 20, 688128, 229376},
		{"low", 64, 24, 8},
		{"tiny", 8, 3, 1},
		{"zero", 0, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Split(tt.limit)
			if b.MQTT != tt.mqtt || b.HTTP != tt.http {
				t.Errorf("Split(%d) = %+v, want mqtt %d http %d", tt.limit, b, tt.mqtt, tt.http)
			}
			if tt.limit > 0 && uint64(b.MQTT+b.HTTP) >= tt.limit {
				t.Errorf("Split(%d) = %+v leaves nothing for the rest of the process", tt.limit, b)
			}
		})
	}
}
