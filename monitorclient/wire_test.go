package monitorclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
)

func sampleBatch() *Batch {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	return &Batch{MonitorID: "mon_1", DeliveryID: "dlv_1", Events: []events.Event{
		{Seq: 7, Type: events.DeviceDataReceived, Time: t0, DeviceID: "ws-1", DeviceType: "sensor", Args: &events.DataReceived{
			MessageID: 3, Topic: "devices/ws-1/data", Transport: "mqtt",
			Readings: []events.Reading{{Time: t0, Values: map[string]any{"temp": 21.5, "on": true, "label": "a<b>&\"c\"", "n": nil, "1bad key": "x", "list": []any{1.0, "two"}}}},
		}},
		{Seq: 9, Type: events.DeviceStatusChanged, Time: t0, DeviceID: "ws-2", DeviceType: "sensor", Args: &events.StatusChanged{OldStatus: "online", NewStatus: "offline"}},
		{Seq: 10, Type: "some_future_type", Time: t0, Args: map[string]any{"x": "y"}},
	}}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	want := sampleBatch()
	for _, format := range []string{FormatJSON, FormatXML} {
		for _, comp := range []string{CompressionNone, CompressionZlib} {
			t.Run(format+"/"+comp, func(t *testing.T) {
				body, err := Encode(want, format, comp)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Decode(body, format, comp, 0)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round trip:\n got %#v\nwant %#v", got.Events[0].Args, want.Events[0].Args)
				}
			})
		}
	}
	if _, err := Decode([]byte("not zlib"), FormatJSON, CompressionZlib, 0); !errors.Is(err, ErrBadBody) {
		t.Fatalf("bad zlib: %v", err)
	}
	big, _ := Encode(&Batch{Events: []events.Event{{Seq: 1, Type: "x", Args: map[string]any{"s": string(bytes.Repeat([]byte("a"), 1<<20))}}}}, FormatJSON, CompressionZlib)
	if _, err := Decode(big, FormatJSON, CompressionZlib, 1000); !errors.Is(err, ErrBadBody) {
		t.Fatalf("inflation bomb: %v", err)
	}
}

// TestEncodeEncoded: a delivery assembled from events encoded one by one
// is byte for byte what Encode writes, in both formats and compressions
// (so that senders may share encoded events between batches and monitors).
func TestEncodeEncoded(t *testing.T) {
	b := sampleBatch()
	b.MonitorID, b.DeliveryID = "mon_<&\"x\">", "dlv_\u2028é"
	var en Encoder // one, reused by every round: its deflate state carries nothing over
	var earlier [][]byte
	for _, format := range []string{FormatJSON, FormatXML} {
		for _, comp := range []string{CompressionNone, CompressionZlib} {
			want, err := Encode(b, format, comp)
			if err != nil {
				t.Fatal(err)
			}
			var frags [][]byte
			for i := range b.Events {
				f, err := EncodeEvent(&b.Events[i], format)
				if err != nil {
					t.Fatal(err)
				}
				frags = append(frags, f)
			}
			got, err := EncodeEncoded(b.MonitorID, b.DeliveryID, frags, format, comp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s/%s:\n got %q\nwant %q", format, comp, got, want)
			}
			for round := range 2 {
				again, err := en.EncodeEncoded(b.MonitorID, b.DeliveryID, frags, format, comp)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(again, want) {
					t.Fatalf("%s/%s, reused encoder, round %d:\n got %q\nwant %q", format, comp, round, again, want)
				}
				earlier = append(earlier, again)
			}
			// Into a reused buffer: the same bytes, in the buffer's
			// memory once it is large enough.
			var dst []byte
			for round := range 3 {
				got, err := en.AppendEncoded(dst, b.MonitorID, b.DeliveryID, frags, format, comp)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s/%s, appended, round %d:\n got %q\nwant %q", format, comp, round, got, want)
				}
				if round == 2 && &got[0] != &dst[0] {
					t.Fatalf("%s/%s: AppendEncoded did not reuse a buffer of capacity %d for %d bytes", format, comp, cap(dst), len(got))
				}
				dst = got
			}
		}
	}
	// What an Encoder returned stays as it was.
	for i, e := range earlier[:len(earlier)-1] {
		w := earlier[i+1]
		if i%2 == 0 && !bytes.Equal(e, w) {
			t.Fatalf("delivery %d changed after later encodings", i)
		}
	}
}

func TestHandler(t *testing.T) {
	secret := NewSecret()
	var got *Batch
	fail := false
	h := NewHandler(HandlerOptions{Secrets: []string{secret}}, func(_ context.Context, b *Batch) error {
		got = b
		if fail {
			return errors.New("no")
		}
		return nil
	})
	body, _ := Encode(sampleBatch(), FormatXML, CompressionZlib)
	send := func(secret string, ts time.Time) int {
		r := httptest.NewRequest(http.MethodPut, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/xml")
		r.Header.Set("Content-Encoding", "deflate")
		r.Header.Set(HeaderID, "dlv_1")
		r.Header.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		sig, err := Sign(secret, "dlv_1", ts, body)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set(HeaderSignature, "v1,bm90IGl0 "+sig)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if c := send(secret, time.Now()); c != http.StatusNoContent || got == nil || len(got.Events) != 3 {
		t.Fatalf("good delivery: %d %v", c, got)
	}
	if c := send(NewSecret(), time.Now()); c != http.StatusUnauthorized {
		t.Fatalf("other secret: %d", c)
	}
	if c := send(secret, time.Now().Add(-time.Hour)); c != http.StatusUnauthorized {
		t.Fatalf("stale: %d", c)
	}
	fail = true
	if c := send(secret, time.Now()); c != http.StatusInternalServerError {
		t.Fatalf("callback failed: %d", c)
	}
}

func TestFrames(t *testing.T) {
	p, err := PublishPayload(PublishHeader{Block: 5, DeliveryID: "d", Count: 2, Format: "json"}, []byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	frame := AppendFrame(nil, FramePublish, p)
	typ, pl, err := ReadFrame(bufio.NewReader(bytes.NewReader(frame)), 0)
	if err != nil || typ != FramePublish {
		t.Fatal(typ, err)
	}
	h, body, err := ParsePublish(pl)
	if err != nil || h.Block != 5 || string(body) != "body" {
		t.Fatal(h, body, err)
	}
	if _, _, err := ParseFrame(frame[:len(frame)-1]); !errors.Is(err, ErrFrame) {
		t.Fatal(err)
	}
	if _, _, err := ReadFrame(bufio.NewReader(bytes.NewReader([]byte{3, 0xff, 0, 0, 0})), 0); !errors.Is(err, ErrFrame) {
		t.Fatal(err)
	}
	if b, err := ParseAck(AckPayload(42)); err != nil || b != 42 {
		t.Fatal(b, err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, format := range []string{FormatJSON, FormatXML} {
		b, _ := Encode(sampleBatch(), format, CompressionNone)
		f.Add(b, format == FormatXML)
	}
	f.Add([]byte(`<delivery><event seq="1" type="x" time="2026-01-01T00:00:00Z"><args type="object"><a type="array"><item type="number">1e3</item></a></args></event></delivery>`), true)
	f.Fuzz(func(t *testing.T, body []byte, isXML bool) {
		format := FormatJSON
		if isXML {
			format = FormatXML
		}
		b, err := Decode(body, format, CompressionNone, 1<<20)
		if err != nil {
			return
		}
		// What decodes encodes again.
		if _, err := Encode(b, format, CompressionNone); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func FuzzFrames(f *testing.F) {
	p, _ := PublishPayload(PublishHeader{Block: 1}, []byte("x"))
	f.Add(AppendFrame(nil, FramePublish, p))
	f.Add([]byte{4, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, p, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)), 1<<16)
		if err != nil {
			return
		}
		switch typ {
		case FramePublish:
			_, _, _ = ParsePublish(p)
		case FrameAck:
			_, _ = ParseAck(p)
		}
	})
}

// TestSigner: a reused Signer signs as Sign does, and what it signs
// verifies.
func TestSigner(t *testing.T) {
	secret := NewSecret()
	s, err := NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1767225600, 0)
	for i, body := range [][]byte{[]byte(`{"a":1}`), nil, bytes.Repeat([]byte("x"), 5000)} {
		id := "dlv_" + strconv.Itoa(i)
		want, err := Sign(secret, id, ts, body)
		if err != nil {
			t.Fatal(err)
		}
		got := s.Sign(id, ts, body)
		if got != want {
			t.Fatalf("body %d: %q, Sign gives %q", i, got, want)
		}
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		h.Set(HeaderSignature, got)
		if err := Verify([]string{secret}, h, body, time.Minute, ts); err != nil {
			t.Fatalf("body %d: %v", i, err)
		}
	}
	if _, err := NewSigner("nope"); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("bad secret: %v", err)
	}
}
