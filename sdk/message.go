package sdk

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Compression is how a stream's messages are compressed before they are
// stored and sent. The hub decodes gzip and zstd (the content type says
// which, see the protocol in the package documentation).
type Compression int

// Compression settings.
const (
	// Uncompressed sends messages as they are.
	Uncompressed Compression = iota
	// Fastest compresses with zstd at its fastest level.
	Fastest
	// SmallestSize compresses with zstd at its best level: smaller, slower.
	SmallestSize
	// Gzip compresses with gzip at its default level, for hubs or tools
	// that prefer it.
	Gzip
)

// Content types of the device protocol.
const (
	contentTypeJSON = "application/json"
	suffixGzip      = "+gzip"
	suffixZstd      = "+zstd"
)

// minCompress is the size under which compression is not worth its header.
const minCompress = 256

// maxMsgIDLen is the hub's limit on a msg_id (characters).
const maxMsgIDLen = 128

// maxChunks is the hub's limit on the chunks of one message.
const maxChunks = 1024

var errMsgIDConflict = errors.New("the payload carries another msg_id")

// withMsgID returns payload (a JSON object or an array of objects) with
// msg_id set in each object, and the msg_id. An empty id takes the msg_id
// the payload carries, or gen() if it carries none.
func withMsgID(payload []byte, id string, gen func() string) ([]byte, string, error) {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 || !json.Valid(p) {
		return nil, "", errors.New("payload is not valid JSON")
	}
	var objs []json.RawMessage
	switch p[0] {
	case '{':
		objs = []json.RawMessage{p}
	case '[':
		if err := json.Unmarshal(p, &objs); err != nil {
			return nil, "", err
		}
		if len(objs) == 0 {
			return nil, "", errors.New("payload is an empty array")
		}
		for i, o := range objs {
			if o = bytes.TrimSpace(o); len(o) == 0 || o[0] != '{' {
				return nil, "", fmt.Errorf("element %d is not a JSON object", i)
			}
			objs[i] = o
		}
	default:
		return nil, "", errors.New("payload must be a JSON object or an array of objects")
	}
	// The msg_id the payload carries, if any.
	carried := ""
	if bytes.Contains(p, []byte(`"msg_id"`)) {
		for _, o := range objs {
			var m struct {
				MsgID *string `json:"msg_id"`
			}
			if err := json.Unmarshal(o, &m); err != nil {
				return nil, "", fmt.Errorf("msg_id: %w", err)
			}
			if m.MsgID == nil {
				continue
			}
			if carried != "" && carried != *m.MsgID {
				return nil, "", errMsgIDConflict
			}
			carried = *m.MsgID
		}
	}
	switch {
	case id != "" && carried != "" && id != carried:
		return nil, "", errMsgIDConflict
	case id == "" && carried != "":
		id = carried
	case id == "":
		id = gen()
	}
	if n := len([]rune(id)); n > maxMsgIDLen {
		return nil, "", fmt.Errorf("msg_id of %d characters: at most %d", n, maxMsgIDLen)
	}
	quoted, _ := json.Marshal(id)
	out := make([]byte, 0, len(p)+len(objs)*(len(quoted)+12))
	if p[0] == '[' {
		out = append(out, '[')
	}
	for i, o := range objs {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendWithField(out, o, quoted, carried != "")
	}
	if p[0] == '[' {
		out = append(out, ']')
	}
	return out, id, nil
}

// appendWithField appends object o with "msg_id" inserted first, unless it
// has one already (then o is appended as it is; all its msg_ids agree).
func appendWithField(out, o, quoted []byte, has bool) []byte {
	if has && bytes.Contains(o, []byte(`"msg_id"`)) {
		return append(out, o...)
	}
	out = append(out, `{"msg_id":`...)
	out = append(out, quoted...)
	rest := bytes.TrimSpace(o[1:])
	if len(rest) > 0 && rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

var (
	zstdFast, zstdBest *zstd.Encoder
	zstdOnce           sync.Once
)

func zstdEncoders() (*zstd.Encoder, *zstd.Encoder) {
	zstdOnce.Do(func() {
		// EncodeAll only, with one goroutine each: no background workers.
		zstdFast, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		zstdBest, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	})
	return zstdFast, zstdBest
}

// compress returns the payload compressed with c and its content type, or
// the payload as it is when compression does not make it smaller.
func compress(c Compression, payload []byte) ([]byte, string) {
	if c == Uncompressed || len(payload) < minCompress {
		return payload, contentTypeJSON
	}
	var (
		out    []byte
		suffix string
	)
	switch c {
	case Gzip:
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(payload) // a bytes.Buffer does not fail
		zw.Close()
		out, suffix = buf.Bytes(), suffixGzip
	case SmallestSize:
		_, best := zstdEncoders()
		out, suffix = best.EncodeAll(payload, nil), suffixZstd
	default:
		fast, _ := zstdEncoders()
		out, suffix = fast.EncodeAll(payload, nil), suffixZstd
	}
	if len(out) >= len(payload) {
		return payload, contentTypeJSON
	}
	return out, contentTypeJSON + suffix
}

// chunk splits a message for topic into entries of at most size bytes of
// payload each, published on topic/chunks/{chunk_id}/{index}/{count}.
func chunk(e entry, size int) ([]entry, error) {
	n := (len(e.payload) + size - 1) / size
	if n > maxChunks {
		return nil, fmt.Errorf("%d chunks of %d bytes: at most %d", n, size, maxChunks)
	}
	id := randomID(8)
	out := make([]entry, n)
	for i := range n {
		c := e
		c.chunkIndex, c.chunkCount = uint32(i), uint32(n)
		c.topic = e.topic + "/chunks/" + id + "/" + strconv.Itoa(i) + "/" + strconv.Itoa(n)
		c.payload = e.payload[i*size : min((i+1)*size, len(e.payload))]
		out[i] = c
	}
	return out, nil
}

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand does not fail
	return hex.EncodeToString(b)
}
