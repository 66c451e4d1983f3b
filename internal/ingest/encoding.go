package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Compressed payloads.
//
// A device says that a payload is compressed with its content type (the
// MQTT v5 content type property, or the HTTP Content-Type): the base type,
// then "+" and the encoding, as in "application/json+gzip" and
// "application/json+zstd" (parameters after ";" are allowed). The
// decompress middleware decodes such a payload before the router and the
// handlers see it, so every topic takes compressed payloads; the audit
// record keeps the decompressed payload. The decompressed size counts
// against the device type's payload limit (payload_too_large), which also
// defuses decompression bombs: decoding stops one byte past the limit.
// A zstd frame's window is another matter: the stock zstd tool writes
// frames with a 2 MiB (default level) to 8 MiB (level 19) window even for
// a few bytes of content, so the window is bounded by a fixed memory
// budget instead (zstdMaxWindow per decoder, zstdDecoders decoders for the
// whole hub), not by the payload limit; a frame asking for more is
// refused (payload_too_large: it needs more memory than the hub gives). An
// encoding other than gzip and zstd, or a payload that does not decode, is
// refused with invalid_payload.

// Content encodings the hub decodes.
const (
	EncodingGzip = "gzip"
	EncodingZstd = "zstd"
)

// errDecompressedTooLarge: decoding went past the limit.
var errDecompressedTooLarge = errors.New("decompressed payload over the limit")

// splitEncoding splits a content type into its base type and its encoding
// ("" if none): "application/json+gzip; x=y" → "application/json", "gzip".
// A structured-syntax suffix "+json" is part of the base type.
func splitEncoding(ct string) (base, enc string) {
	mt, params, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	i := strings.LastIndexByte(mt, '+')
	if i < 0 || i < strings.IndexByte(mt, '/') {
		return ct, ""
	}
	suffix := strings.ToLower(mt[i+1:])
	if suffix == "json" || suffix == "" {
		return ct, ""
	}
	base = mt[:i]
	if params != "" {
		base += ";" + params
	}
	return base, suffix
}

// decompress decodes compressed payloads (see above).
func (p *Pipeline) decompress() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			base, enc := splitEncoding(m.Req.ContentType)
			if enc == "" {
				return next.Handle(ctx, m)
			}
			out, err := inflate(ctx, enc, m.Req.Payload, m.info.maxPayload)
			switch {
			case err != nil && ctx.Err() != nil:
				return fmt.Errorf("decompress: %w", ctx.Err()) // not the payload's fault
			case errors.Is(err, errUnknownEncoding):
				return &Rejection{Code: CodeInvalidPayload, Reason: fmt.Sprintf("content encoding %q is not supported; use gzip or zstd", enc)}
			case errors.Is(err, errDecompressedTooLarge):
				return &Rejection{Code: CodePayloadTooLarge, Reason: fmt.Sprintf("decompressed payload is over the limit of %d bytes", m.info.maxPayload)}
			case err != nil:
				return &Rejection{Code: CodeInvalidPayload, Reason: fmt.Sprintf("payload is not valid %s: %v", enc, err)}
			}
			r := *m.Req
			r.Payload, r.ContentType = out, base
			m.Req = &r
			return next.Handle(ctx, m)
		})
	}
}

var errUnknownEncoding = errors.New("unknown content encoding")

// The zstd memory budget: at most zstdDecoders decoders exist, each with a
// window of at most zstdMaxWindow (what zstd -19 uses; --long and --ultra
// frames ask for more and are refused), so zstd decoding holds at most
// about zstdDecoders × zstdMaxWindow whatever the fleet sends. A decode
// waits for a free decoder.
const (
	zstdMaxWindow = 8 << 20
	zstdDecoders  = 4
)

var (
	gzipReaders sync.Pool // *gzip.Reader
	// zstdPool holds the zstd decoders (nil until first use) and is the
	// semaphore of the budget.
	zstdPool = func() chan *zstd.Decoder {
		c := make(chan *zstd.Decoder, zstdDecoders)
		for range zstdDecoders {
			c <- nil
		}
		return c
	}()
)

// inflate decodes p, reading at most limit bytes of output.
func inflate(ctx context.Context, enc string, p []byte, limit int) ([]byte, error) {
	var (
		r    io.Reader
		done func()
	)
	switch enc {
	case EncodingGzip:
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(p))
		} else {
			err = zr.Reset(bytes.NewReader(p))
		}
		if err != nil {
			return nil, err
		}
		r, done = zr, func() { gzipReaders.Put(zr) }
	case EncodingZstd:
		var zd *zstd.Decoder
		select {
		case zd = <-zstdPool:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var err error
		if zd == nil {
			// One goroutine (no async decoding: no background workers).
			zd, err = zstd.NewReader(bytes.NewReader(p), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderMaxMemory(zstdMaxWindow))
			if err != nil {
				zstdPool <- nil
				return nil, err
			}
		} else if err = zd.Reset(bytes.NewReader(p)); err != nil {
			zstdPool <- zd
			return nil, err
		}
		r, done = zd, func() {
			_ = zd.Reset(nil)
			zstdPool <- zd
		}
	default:
		return nil, errUnknownEncoding
	}
	defer done()
	buf := bytes.NewBuffer(make([]byte, 0, min(limit+1, max(512, 4*len(p)))))
	if _, err := io.Copy(buf, io.LimitReader(r, int64(limit)+1)); err != nil {
		if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, errDecompressedTooLarge // the frame asks for more memory than a payload may have
		}
		return nil, err
	}
	if buf.Len() > limit {
		return nil, errDecompressedTooLarge
	}
	return buf.Bytes(), nil
}
