package ingest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestBatch(t *testing.T) {
	ctx := context.Background()
	batch := `[{"temp": 1, "msg_id": "a"}, [{"temp": 2, "msg_id": "b"}, {"temp": 3}], {"temp": 4, "msg_id": "c"}]`
	t.Run("each message stored once", func(t *testing.T) {
		h := newHarness(t, Options{})
		for _, ct := range []string{ContentTypeBatch, ContentTypeBatch + "+gzip"} {
			r := req("devices/dev1/data/env", "")
			r.Payload, r.ContentType = []byte(batch), ct
			if strings.HasSuffix(ct, "gzip") {
				r.Payload = gz(t, r.Payload)
			}
			res, err := h.p.Handle(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if ct == ContentTypeBatch && (res.Readings != 4 || res.Duplicate) {
				t.Fatalf("result %+v", res)
			}
			if ct != ContentTypeBatch && !res.Duplicate {
				t.Fatalf("the same batch again: result %+v, want duplicate", res)
			}
		}
		ch := h.store.all()
		if len(ch) != 3 {
			t.Fatalf("%d changes, want 3", len(ch))
		}
		for i, want := range []string{"a", "b", "c"} {
			if msgOf(ch[i]).MsgID != want || msgOf(ch[i]).Topic != "devices/dev1/data/env" || rowsOf(ch[i])[0].Stream != "env" {
				t.Errorf("change %d: %+v", i, msgOf(ch[i]))
			}
		}
		if string(msgOf(ch[0]).Payload) != `{"temp": 1, "msg_id": "a"}` {
			t.Errorf("audit payload %s", msgOf(ch[0]).Payload)
		}
	})
	tests := []struct {
		name, payload, code string
	}{
		{"not an array", `{"temp": 1}`, CodeInvalidJSON},
		{"empty", `[]`, CodeInvalidPayload},
		{"one bad message", `[{"temp": 1, "msg_id": "x"}, {"temp": 500}]`, CodeValidationFailed},
		{"not JSON", `[{"temp": 1}`, CodeInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			r := req("devices/dev1/data", tt.payload)
			r.ContentType = ContentTypeBatch
			_, err := h.p.Handle(ctx, r)
			var rej *Rejection
			if !errors.As(err, &rej) || rej.Code != tt.code {
				t.Fatalf("err = %v, want %s", err, tt.code)
			}
			for _, ch := range h.store.all() {
				if msgOf(ch).Accepted {
					t.Fatalf("stored %+v", msgOf(ch))
				}
			}
		})
	}
	t.Run("too many readings", func(t *testing.T) {
		h := newHarness(t, Options{MaxReadingsPerMessage: 2})
		r := req("devices/dev1/data", batch)
		r.ContentType = ContentTypeBatch
		_, err := h.p.Handle(ctx, r)
		var rej *Rejection
		if !errors.As(err, &rej) || rej.Code != CodePayloadTooLarge {
			t.Fatalf("err = %v, want payload_too_large", err)
		}
	})
}
