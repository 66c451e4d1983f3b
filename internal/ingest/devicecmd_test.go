package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// codeErr is a service error carrying a rejection code.
type codeErr string

func (e codeErr) Error() string      { return "service: " + string(e) }
func (e codeErr) RejectCode() string { return string(e) }

// fakeDeviceCmd records command results and reported patches, and stores
// them through the committer.
type fakeDeviceCmd struct {
	c   Committer
	err error // returned instead of storing
	dup bool  // answer "stored before"

	mu      sync.Mutex
	results []string
	patches []map[string]any
	msgIDs  []string
}

func (f *fakeDeviceCmd) RecordResult(ctx context.Context, dev, typ, id, status string, result json.RawMessage, msg *readings.Message) (*commit.Ticket, bool, error) {
	if f.err != nil {
		return nil, false, f.err
	}
	f.mu.Lock()
	f.results = append(f.results, dev+" "+id+" "+status+" "+string(result))
	f.mu.Unlock()
	t, err := f.c.Enqueue(ctx, &commit.Change{DeviceID: dev, Ops: []commit.Op{msg}})
	return t, f.dup, err
}

func (f *fakeDeviceCmd) RecordReported(ctx context.Context, dev, typ string, patch map[string]any, msg *readings.Message) (*commit.Ticket, error) {
	if f.err != nil {
		return nil, f.err
	}
	f.mu.Lock()
	f.patches = append(f.patches, patch)
	f.msgIDs = append(f.msgIDs, msg.MsgID)
	f.mu.Unlock()
	return f.c.Enqueue(ctx, &commit.Change{DeviceID: dev, Ops: []commit.Op{msg}})
}

func TestCommandResultsAndReported(t *testing.T) {
	tests := []struct {
		name     string
		topic    string
		payload  string
		noDeps   bool
		svcErr   error
		dup      bool
		wantCode string // "" accepted
		want     string // the result recorded, or the patch as JSON
		wantMsg  string // the msg_id of a reported patch
	}{
		{name: "result", topic: "devices/dev1/commands/c1/result", payload: `{"status":"succeeded","result":{"b":2,"a":[1,"x"]}}`,
			want: `dev1 c1 succeeded {"a":[1,"x"],"b":2}`},
		{name: "result without result", topic: "devices/dev1/commands/c1/result", payload: `{"status":"failed"}`, want: "dev1 c1 failed "},
		{name: "result again", topic: "devices/dev1/commands/c1/result", payload: `{"status":"failed"}`, dup: true, want: "dev1 c1 failed "},
		{name: "bad status", topic: "devices/dev1/commands/c1/result", payload: `{"status":"done"}`, wantCode: CodeValidationFailed},
		{name: "not json", topic: "devices/dev1/commands/c1/result", payload: `{`, wantCode: CodeInvalidJSON},
		{name: "unknown command", topic: "devices/dev1/commands/zz/result", payload: `{"status":"failed"}`, svcErr: codeErr(CodeUnknownCommand), wantCode: CodeUnknownCommand},
		{name: "another device's topic", topic: "devices/dev2/commands/c1/result", payload: `{"status":"failed"}`, wantCode: CodeIdentityMismatch},
		{name: "no command service", topic: "devices/dev1/commands/c1/result", payload: `{"status":"failed"}`, noDeps: true, wantCode: CodeUnknownTopic},
		{name: "reported", topic: "devices/dev1/twin/reported", payload: `{"fw":"1.2","net":{"rssi":-60},"old":null,"msg_id":"r1"}`,
			want: `{"fw":"1.2","net":{"rssi":-60},"old":null}`, wantMsg: "r1"},
		{name: "reported empty", topic: "devices/dev1/twin/reported", payload: `{"msg_id":"r2"}`, wantCode: CodeInvalidPayload},
		{name: "reported array", topic: "devices/dev1/twin/reported", payload: `[1]`, wantCode: CodeInvalidPayload},
		{name: "reported bad msg_id", topic: "devices/dev1/twin/reported", payload: `{"a":1,"msg_id":7}`, wantCode: CodeInvalidPayload},
		{name: "no twin service", topic: "devices/dev1/twin/reported", payload: `{"a":1}`, noDeps: true, wantCode: CodeUnknownTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			f := &fakeDeviceCmd{c: h.p.deps.Committer, err: tt.svcErr, dup: tt.dup}
			if !tt.noDeps {
				h.p.deps.Commands, h.p.deps.Twin = f, f
			}
			res, err := h.p.Handle(context.Background(), req(tt.topic, tt.payload))
			if tt.wantCode != "" {
				var rej *Rejection
				if !errors.As(err, &rej) || rej.Code != tt.wantCode {
					t.Fatalf("err %v, want %s", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Duplicate != tt.dup || res.MessageID == 0 {
				t.Errorf("result %+v", res)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			var got string
			switch {
			case len(f.results) == 1:
				got = f.results[0]
			case len(f.patches) == 1:
				b, _ := json.Marshal(f.patches[0])
				got = string(b)
				if f.msgIDs[0] != tt.wantMsg {
					t.Errorf("msg_id %q, want %q", f.msgIDs[0], tt.wantMsg)
				}
			}
			if got != tt.want {
				t.Errorf("recorded %q, want %q", got, tt.want)
			}
		})
	}
}
