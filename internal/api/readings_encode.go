package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/devicehub/devicehub/internal/jsonenc"
	"github.com/devicehub/devicehub/internal/readings"
)

// appendReadingsPage appends page as a ReadingsPage in JSON, byte for byte
// what huma's encoder (encoding/json without HTML escaping) writes for it
// less the final newline: a page of 1,000 readings spent most of its time
// in encoding/json's reflection over the values' maps, sorting their keys
// and formatting times (TestAppendReadingsPage, FuzzAppendReadingsPage).
func appendReadingsPage(b []byte, page readings.Page) ([]byte, error) {
	b = slices.Grow(b, 64+len(page.Readings)*(160+len(deviceIDOf(page))))
	b = append(b, `{"readings":[`...)
	var keys []string
	var err error
	for i := range page.Readings {
		r := &page.Readings[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, r.ID, 10)
		b = append(b, `,"device_id":`...)
		b = appendJSONText(b, r.DeviceID)
		if r.Stream != "" {
			b = append(b, `,"stream":`...)
			b = appendJSONText(b, r.Stream)
		}
		b = append(b, `,"ts":`...)
		if b, err = jsonenc.AppendTime(b, r.Time); err != nil {
			return nil, err
		}
		b = append(b, `,"received_at":`...)
		if b, err = jsonenc.AppendTime(b, r.ReceivedAt); err != nil {
			return nil, err
		}
		b = append(b, `,"message_id":`...)
		b = strconv.AppendInt(b, r.MessageID, 10)
		b = append(b, `,"values":{`...)
		keys = keys[:0]
		for k := range r.Values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for j, k := range keys {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONText(b, k)
			b = append(b, ':')
			if b, err = appendJSONValue(b, r.Values[k]); err != nil {
				return nil, fmt.Errorf("reading %d, field %q: %w", r.ID, k, err)
			}
		}
		b = append(b, "}}"...)
	}
	b = append(b, ']')
	if page.Next != "" {
		b = append(b, `,"next":`...)
		b = appendJSONText(b, page.Next)
	}
	return append(b, '}'), nil
}

func deviceIDOf(page readings.Page) string {
	if len(page.Readings) == 0 {
		return ""
	}
	return page.Readings[0].DeviceID
}

// appendJSONValue appends a value as encoding/json decodes readings into
// (float64, string, bool, nil; anything else, such as objects and arrays,
// through encoding/json).
func appendJSONValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case float64:
		return jsonenc.AppendFloat(b, v)
	case string:
		return appendJSONText(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case nil:
		return append(b, "null"...), nil
	}
	return appendJSONMarshal(b, v)
}

// appendJSONText appends s as a JSON string as encoding/json does without
// HTML escaping: as it is when it needs no escaping, else through
// encoding/json.
func appendJSONText(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			b, _ = appendJSONMarshal(b, s) // a string always encodes
			return b
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONMarshal appends v encoded by encoding/json without HTML
// escaping, as huma's encoder writes it.
func appendJSONMarshal(b []byte, v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})...), nil
}
