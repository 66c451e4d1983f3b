// Package monitorclient receives what a devicehub push monitor delivers:
// the batches of events an HTTP monitor sends to a web server, and the
// stream a TCP monitor serves over TCP (optionally TLS) or WebSocket.
//
// A webhook receiver is an http.Handler:
//
//	h := monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: []string{secret}},
//		func(ctx context.Context, b *monitorclient.Batch) error {
//			for _, e := range b.Events { fmt.Println(e.Seq, e.Type, e.DeviceID) }
//			return nil // 2xx: the hub moves the monitor's cursor
//		})
//	http.ListenAndServe(":9000", h)
//
// A stream receiver is a Stream, run until its context ends:
//
//	s := monitorclient.NewStream(monitorclient.StreamOptions{
//		Addr: "hub:7443", MonitorID: id, Token: token, TLS: &tls.Config{...},
//		Callback: func(b *monitorclient.Batch) bool { ...; return true }, // true acks
//	})
//	err := s.Run(ctx)
//
// The package also holds the wire format both sides share (Encode, Decode,
// Sign, Verify, the stream frames), so that the hub and its receivers
// cannot drift apart.
package monitorclient

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/devicehub/devicehub/events"
)

// Formats and compressions of a delivery.
const (
	FormatJSON      = "json"
	FormatXML       = "xml"
	CompressionNone = "none"
	CompressionZlib = "zlib"
)

// ErrBadBody is wrapped by Decode's errors: the body is not a delivery in the
// format and compression it claims.
var ErrBadBody = errors.New("bad delivery body")

// Batch is one delivery: the events of one monitor, in sequence order.
type Batch struct {
	MonitorID  string         `json:"monitor_id"`
	DeliveryID string         `json:"delivery_id"`
	Events     []events.Event `json:"events"`
}

// FirstSeq and LastSeq are the sequence numbers of the batch's first and
// last events (0 for an empty batch).
func (b *Batch) FirstSeq() int64 {
	if len(b.Events) == 0 {
		return 0
	}
	return b.Events[0].Seq
}

// LastSeq: see FirstSeq.
func (b *Batch) LastSeq() int64 {
	if len(b.Events) == 0 {
		return 0
	}
	return b.Events[len(b.Events)-1].Seq
}

// ContentType is the media type of a delivery in format.
func ContentType(format string) string {
	if format == FormatXML {
		return "application/xml"
	}
	return "application/json"
}

// Encode writes b in format (json or xml), compressed with compression
// (none or zlib: the deflate algorithm in a zlib stream, which HTTP calls
// Content-Encoding: deflate).
func Encode(b *Batch, format, compression string) ([]byte, error) {
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *zlib.Writer
	if compression == CompressionZlib {
		zw = zlib.NewWriter(&buf)
		w = zw
	} else if compression != CompressionNone && compression != "" {
		return nil, fmt.Errorf("encode: unknown compression %q", compression)
	}
	var err error
	switch format {
	case FormatJSON, "":
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		err = enc.Encode(b)
	case FormatXML:
		err = encodeXML(w, b)
	default:
		return nil, fmt.Errorf("encode: unknown format %q", format)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", format, err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return nil, fmt.Errorf("encode: deflate: %w", err)
		}
	}
	return buf.Bytes(), nil
}

// EncodeEvent encodes one event as Encode writes it inside a delivery in
// format: a JSON object, or an XML <event> element. With EncodeEncoded a
// sender encodes each event once for every batch (and every monitor) it
// goes in.
func EncodeEvent(e *events.Event, format string) ([]byte, error) {
	var buf bytes.Buffer
	switch format {
	case FormatJSON, "":
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(e); err != nil {
			return nil, fmt.Errorf("encode event %d: %w", e.Seq, err)
		}
		return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
	case FormatXML:
		enc := xml.NewEncoder(&buf)
		if err := encodeXMLEvent(enc, e); err != nil {
			return nil, err
		}
		if err := enc.Flush(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("encode: unknown format %q", format)
}

// EncodeEncoded writes a delivery of events encoded by EncodeEvent in
// format: the same bytes Encode writes for the batch of those events.
func EncodeEncoded(monitorID, deliveryID string, evs [][]byte, format, compression string) ([]byte, error) {
	var en Encoder
	return en.EncodeEncoded(monitorID, deliveryID, evs, format, compression)
}

// Encoder is EncodeEncoded for a sender of many deliveries: it keeps its
// deflate state between them (setting up a zlib writer allocates most of
// a megabyte, more than a batch of a thousand events). The zero Encoder
// is ready; it is not safe for concurrent use. Each delivery it returns is
// a new slice, which the caller may keep.
type Encoder struct {
	zw *zlib.Writer
}

// EncodeEncoded: see the package function.
func (en *Encoder) EncodeEncoded(monitorID, deliveryID string, evs [][]byte, format, compression string) ([]byte, error) {
	return en.AppendEncoded(nil, monitorID, deliveryID, evs, format, compression)
}

// AppendEncoded is EncodeEncoded writing the delivery into dst[:0] when it
// has room (it allocates otherwise): a sender that keeps one buffer for
// its deliveries makes no garbage of ~40 KB per batch of 100 events. The
// returned slice shares dst's memory.
func (en *Encoder) AppendEncoded(dst []byte, monitorID, deliveryID string, evs [][]byte, format, compression string) ([]byte, error) {
	if (format == FormatJSON || format == "") && (compression == CompressionNone || compression == "") {
		return appendJSONDelivery(dst[:0], monitorID, deliveryID, evs), nil // the common case, without a copy
	}
	buf := bytes.NewBuffer(dst[:0])
	var w io.Writer = buf
	if compression == CompressionZlib {
		size := 0
		for _, e := range evs {
			size += len(e)
		}
		buf.Grow(size/4 + 256)
		if en.zw == nil {
			en.zw = zlib.NewWriter(buf)
		} else {
			en.zw.Reset(buf)
		}
		w = en.zw
	} else if compression != CompressionNone && compression != "" {
		return nil, fmt.Errorf("encode: unknown compression %q", compression)
	}
	var err error
	switch format {
	case FormatJSON, "":
		err = writeJSONDelivery(w, monitorID, deliveryID, evs)
	case FormatXML:
		err = writeXMLDelivery(w, monitorID, deliveryID, evs)
	default:
		return nil, fmt.Errorf("encode: unknown format %q", format)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", format, err)
	}
	if compression == CompressionZlib {
		if err := en.zw.Close(); err != nil {
			return nil, fmt.Errorf("encode: deflate: %w", err)
		}
		en.zw.Reset(io.Discard) // hold no reference to the returned bytes
	}
	return buf.Bytes(), nil
}

func jsonString(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func writeJSONDelivery(w io.Writer, monitorID, deliveryID string, evs [][]byte) error {
	_, err := w.Write(jsonDelivery(monitorID, deliveryID, evs))
	return err
}

func jsonDelivery(monitorID, deliveryID string, evs [][]byte) []byte {
	return appendJSONDelivery(nil, monitorID, deliveryID, evs)
}

// appendJSONDelivery appends a JSON delivery to b, growing it once.
func appendJSONDelivery(b []byte, monitorID, deliveryID string, evs [][]byte) []byte {
	size := 64 + len(monitorID) + len(deliveryID)
	for _, e := range evs {
		size += len(e) + 1
	}
	b = slices.Grow(b, size)
	b = append(b, `{"monitor_id":`...)
	b = append(b, jsonString(monitorID)...)
	b = append(b, `,"delivery_id":`...)
	b = append(b, jsonString(deliveryID)...)
	b = append(b, `,"events":[`...)
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, "]}\n"...)
}

func writeXMLDelivery(w io.Writer, monitorID, deliveryID string, evs [][]byte) error {
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	if err := enc.EncodeToken(xmlRoot(monitorID, deliveryID, len(evs))); err != nil {
		return err
	}
	if err := enc.Flush(); err != nil {
		return err
	}
	for _, e := range evs {
		if _, err := w.Write(e); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "</delivery>")
	return err
}

func xmlRoot(monitorID, deliveryID string, n int) xml.StartElement {
	return xml.StartElement{Name: xml.Name{Local: "delivery"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "monitor_id"}, Value: monitorID},
		{Name: xml.Name{Local: "delivery_id"}, Value: deliveryID},
		{Name: xml.Name{Local: "count"}, Value: strconv.Itoa(n)},
	}}
}

// Decode reads a delivery body written by Encode. maxBytes bounds the
// inflated size (0: 64 MiB), so that a small compressed body cannot fill
// the receiver's memory.
func Decode(body []byte, format, compression string, maxBytes int64) (*Batch, error) {
	if maxBytes <= 0 {
		maxBytes = 64 << 20
	}
	raw := body
	switch compression {
	case CompressionZlib, "gzip", "deflate":
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("%w: inflate: %v", ErrBadBody, err)
		}
		raw, err = io.ReadAll(io.LimitReader(zr, maxBytes+1))
		if err != nil {
			return nil, fmt.Errorf("%w: inflate: %v", ErrBadBody, err)
		}
		if int64(len(raw)) > maxBytes {
			return nil, fmt.Errorf("%w: inflates to more than %d bytes", ErrBadBody, maxBytes)
		}
	case CompressionNone, "", "identity":
	default:
		return nil, fmt.Errorf("%w: unknown compression %q", ErrBadBody, compression)
	}
	b := &Batch{}
	switch format {
	case FormatJSON, "":
		if err := json.Unmarshal(raw, b); err != nil {
			return nil, fmt.Errorf("%w: json: %v", ErrBadBody, err)
		}
	case FormatXML:
		if err := decodeXML(raw, b); err != nil {
			return nil, fmt.Errorf("%w: xml: %v", ErrBadBody, err)
		}
	default:
		return nil, fmt.Errorf("%w: unknown format %q", ErrBadBody, format)
	}
	if b.Events == nil {
		b.Events = []events.Event{}
	}
	return b, nil
}

// The XML document mirrors the JSON one:
//
//	<delivery monitor_id="mon_…" delivery_id="dlv_…" count="2">
//	  <event seq="7" type="device_data_received" time="…" device_id="ws-1" device_type="sensor">
//	    <args type="object"><topic type="string">devices/ws-1/data</topic>…</args>
//	  </event>
//	</delivery>
//
// Every value element says its JSON type (object, array, string, number,
// boolean, null); array items are <item> elements; an object key that is
// not an XML name is written <field name="the key">.

func encodeXML(w io.Writer, b *Batch) error {
	enc := xml.NewEncoder(w)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	root := xmlRoot(b.MonitorID, b.DeliveryID, len(b.Events))
	if err := enc.EncodeToken(root); err != nil {
		return err
	}
	for i := range b.Events {
		if err := encodeXMLEvent(enc, &b.Events[i]); err != nil {
			return err
		}
	}
	if err := enc.EncodeToken(root.End()); err != nil {
		return err
	}
	return enc.Flush()
}

func encodeXMLEvent(enc *xml.Encoder, e *events.Event) error {
	start := xml.StartElement{Name: xml.Name{Local: "event"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "seq"}, Value: strconv.FormatInt(e.Seq, 10)},
		{Name: xml.Name{Local: "type"}, Value: string(e.Type)},
		{Name: xml.Name{Local: "time"}, Value: e.Time.UTC().Format(time.RFC3339Nano)},
		{Name: xml.Name{Local: "device_id"}, Value: e.DeviceID},
		{Name: xml.Name{Local: "device_type"}, Value: e.DeviceType},
	}}
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	args, err := genericArgs(e.Args)
	if err != nil {
		return fmt.Errorf("event %d: %w", e.Seq, err)
	}
	if err := encodeValue(enc, "args", args); err != nil {
		return err
	}
	return enc.EncodeToken(start.End())
}

// genericArgs turns typed arguments into JSON values (maps, slices, numbers)
// through their JSON encoding, so that XML carries exactly what JSON does.
func genericArgs(a any) (any, error) {
	raw, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func encodeValue(enc *xml.Encoder, key string, v any) error {
	start := xml.StartElement{Name: xml.Name{Local: key}}
	if !isXMLName(key) {
		start = xml.StartElement{Name: xml.Name{Local: "field"}, Attr: []xml.Attr{{Name: xml.Name{Local: "name"}, Value: key}}}
	}
	typ, text := "", ""
	switch x := v.(type) {
	case nil:
		typ = "null"
	case bool:
		typ, text = "boolean", strconv.FormatBool(x)
	case json.Number:
		typ, text = "number", x.String()
	case float64:
		typ, text = "number", strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		typ, text = "string", x
	case []any:
		typ = "array"
	case map[string]any:
		typ = "object"
	default:
		return fmt.Errorf("unexpected value %T", v)
	}
	start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Local: "type"}, Value: typ})
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	switch x := v.(type) {
	case []any:
		for _, item := range x {
			if err := encodeValue(enc, "item", item); err != nil {
				return err
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := encodeValue(enc, k, x[k]); err != nil {
				return err
			}
		}
	default:
		if text != "" {
			if err := enc.EncodeToken(xml.CharData(xmlSafe(text))); err != nil {
				return err
			}
		}
	}
	return enc.EncodeToken(start.End())
}

// xmlSafe replaces the characters XML 1.0 cannot carry at all (most control
// characters, invalid UTF-8) with U+FFFD.
func xmlSafe(s string) string {
	ok := true
	for _, r := range s {
		if !xmlChar(r) {
			ok = false
			break
		}
	}
	if ok && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if !xmlChar(r) {
			r = utf8.RuneError
		}
		b.WriteRune(r)
	}
	return b.String()
}

func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF && r != utf8.RuneError ||
		r >= 0xE000 && r <= 0xFFFD && r != utf8.RuneError ||
		r >= 0x10000 && r <= 0x10FFFF
}

func isXMLName(s string) bool {
	if s == "" || strings.HasPrefix(strings.ToLower(s), "xml") {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}

// xnode is a parsed element.
type xnode struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Text     string     `xml:",chardata"`
	Children []xnode    `xml:",any"`
}

func (n *xnode) attr(name string) (string, bool) {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

func decodeXML(raw []byte, b *Batch) error {
	var root xnode
	if err := xml.Unmarshal(raw, &root); err != nil {
		return err
	}
	if root.XMLName.Local != "delivery" {
		return fmt.Errorf("root element %q, want delivery", root.XMLName.Local)
	}
	b.MonitorID, _ = root.attr("monitor_id")
	b.DeliveryID, _ = root.attr("delivery_id")
	for i := range root.Children {
		n := &root.Children[i]
		if n.XMLName.Local != "event" {
			return fmt.Errorf("element %q in delivery, want event", n.XMLName.Local)
		}
		var e events.Event
		s, _ := n.attr("seq")
		seq, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("event seq %q: not an integer", s)
		}
		e.Seq = seq
		t, _ := n.attr("type")
		e.Type = events.Type(t)
		ts, _ := n.attr("time")
		if e.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return fmt.Errorf("event %d time %q: %v", seq, ts, err)
		}
		e.DeviceID, _ = n.attr("device_id")
		e.DeviceType, _ = n.attr("device_type")
		var args any
		for j := range n.Children {
			if n.Children[j].XMLName.Local == "args" {
				if args, err = xmlValue(&n.Children[j], 0); err != nil {
					return fmt.Errorf("event %d args: %w", seq, err)
				}
			}
		}
		rawArgs, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("event %d args: %w", seq, err)
		}
		if e.Args, err = events.DecodeArgs(e.Type, rawArgs); err != nil {
			return fmt.Errorf("event %d: %w", seq, err)
		}
		b.Events = append(b.Events, e)
	}
	return nil
}

func xmlValue(n *xnode, depth int) (any, error) {
	if depth > 64 {
		return nil, errors.New("nested too deep")
	}
	typ, _ := n.attr("type")
	switch typ {
	case "null":
		return nil, nil
	case "boolean":
		return strconv.ParseBool(strings.TrimSpace(n.Text))
	case "number":
		f, err := strconv.ParseFloat(strings.TrimSpace(n.Text), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("<%s> %q: not a number", n.XMLName.Local, n.Text)
		}
		return json.Number(strings.TrimSpace(n.Text)), nil
	case "string", "":
		if len(n.Children) > 0 && typ == "" {
			return nil, fmt.Errorf("<%s>: value without a type", n.XMLName.Local)
		}
		return n.Text, nil
	case "array":
		out := make([]any, 0, len(n.Children))
		for i := range n.Children {
			v, err := xmlValue(&n.Children[i], depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case "object":
		out := make(map[string]any, len(n.Children))
		for i := range n.Children {
			c := &n.Children[i]
			key := c.XMLName.Local
			if key == "field" {
				if name, ok := c.attr("name"); ok {
					key = name
				}
			}
			v, err := xmlValue(c, depth+1)
			if err != nil {
				return nil, err
			}
			out[key] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("<%s>: unknown type %q", n.XMLName.Local, typ)
}
