package broker

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
)

func TestWebSocket(t *testing.T) {
	// mochi's WebSocket listener binds in Serve and does not report its
	// address, so pick a free port first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsAddr := ln.Addr().String()
	ln.Close()

	p := &fakePresence{}
	b, err := New(Options{WSAddr: wsAddr}, Deps{Authenticator: fakeAuth{"dev1": {password: "pw1", typ: "t"}}, PublishHandler: &fakeHandler{errs: map[string]error{}}, Presence: p},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-b.Ready()

	u, _ := url.Parse("ws://" + wsAddr + "/")
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	cm, err := autopaho.NewConnection(cctx, autopaho.ClientConfig{
		ServerUrls:       []*url.URL{u},
		KeepAlive:        30,
		ConnectUsername:  "dev1",
		ConnectPassword:  []byte("pw1"),
		ReconnectBackoff: autopaho.NewConstantBackoff(20 * time.Millisecond),
		ClientConfig:     paho.ClientConfig{ClientID: "dev1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cm.AwaitConnection(cctx); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "Connected", func() bool { return len(p.find("connected", "dev1")) == 1 })
	_ = cm.Disconnect(cctx)
	<-cm.Done()
	eventually.True(t, 5*time.Second, "Disconnected", func() bool { return len(p.find("disconnected", "dev1")) == 1 })
}
