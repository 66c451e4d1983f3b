package bench

import "testing"

func TestParseNetstat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]float64
	}{
		{"tcpext", "TcpExt: SyncookiesSent ListenOverflows TCPSynRetrans\nTcpExt: 0 1093 1081\nIpExt: InNoRoutes\nIpExt: 7\n",
			map[string]float64{"SyncookiesSent": 0, "ListenOverflows": 1093, "TCPSynRetrans": 1081}},
		{"no tcpext", "IpExt: InNoRoutes\nIpExt: 7\n", map[string]float64{}},
		{"values missing", "TcpExt: ListenOverflows TCPSynRetrans\nTcpExt: 1\n", map[string]float64{}},
		{"empty", "", map[string]float64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseNetstat(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}
