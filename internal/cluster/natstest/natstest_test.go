package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestStart: once Start returns, every server answers JetStream requests.
func TestStart(t *testing.T) {
	tests := []struct {
		name string
		n    int
	}{
		{name: "one server", n: 1},
		{name: "three servers", n: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Start(t, tt.n)
			if got := len(c.URLs()); got != tt.n {
				t.Fatalf("%d URLs, want %d", got, tt.n)
			}
			for _, u := range c.URLs() {
				nc, err := nats.Connect(u)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				js, err := jetstream.New(nc)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := js.AccountInfo(ctx); err != nil {
					t.Fatalf("account info from %s: %v\n%s", u, err, c.state())
				}
			}
		})
	}
}
