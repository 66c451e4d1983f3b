package monitors

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/eventually"
)

// TestBodyBufReuse: the send loop's delivery buffer is handed out again
// only once every request body over it was closed, and a request sent
// through a real transport closes it (with the right Content-Length, not
// chunked).
func TestBodyBufReuse(t *testing.T) {
	var got []byte
	var length int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		length = r.ContentLength
	}))
	defer srv.Close()

	var b bodyBuf
	if b.take() != nil {
		t.Fatal("a new buffer is not empty")
	}
	b.buf = append(make([]byte, 0, 64), "delivery one"...)
	rb := b.reader(b.buf)
	open := rb.open()
	if b.take() != nil {
		t.Fatal("the buffer was handed out while a body over it was open")
	}
	open.Close()
	open.Close() // a second Close counts once
	b.buf = append(make([]byte, 0, 64), "delivery two"...)
	if x := b.take(); x == nil || string(x) != "delivery two" {
		t.Fatalf("take = %q after every body closed", x)
	}

	tr := newHTTPTarget(&Spec{URL: srv.URL, Method: http.MethodPost}, true)
	defer tr.close()
	d := delivery{id: "d1", monitor: "m1", first: 1, last: 1, n: 1}
	if res := tr.post(t.Context(), &d, b.reader(b.buf), nil, time.Now()); res.err != nil {
		t.Fatal(res.err)
	}
	if string(got) != "delivery two" || length != int64(len("delivery two")) {
		t.Fatalf("receiver got %q with Content-Length %d", got, length)
	}
	// The transport closes the body, possibly after Do returned.
	eventually.True(t, 10*time.Second, "the transport closed the request body", func() bool { return b.readers.Load() == 0 })
	if x := b.take(); x == nil {
		t.Fatal("the buffer was not handed out again after the request")
	}
}
