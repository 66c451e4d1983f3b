package deviceconfig

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
)

// Row is a device's configuration with what rendering needs of its device.
type Row struct {
	DeviceConfig
	Device DeviceInfo
}

// ListQuery selects device configurations, by device id.
type ListQuery struct {
	Status     Status // "": any
	NotApplied bool   // only those whose status is not applied
	After      string // cursor: device ids greater than this
	Limit      int    // 0: 1000
}

// Store is what configuration management reads. Writes go through the
// commit path (TxStore).
type Store interface {
	ListTemplates(ctx context.Context) ([]Template, error)
	ListGroupConfigs(ctx context.Context) ([]GroupConfig, error)
	// GetDeviceConfig returns a device's configuration with its rendered
	// bytes (ErrNoConfig when it has none).
	GetDeviceConfig(ctx context.Context, deviceID string) (*DeviceConfig, error)
	// ListDeviceConfigs lists configurations without their rendered bytes.
	ListDeviceConfigs(ctx context.Context, q ListQuery) ([]Row, error)
	// ConfigDevice returns what rendering needs of a device
	// (ErrDeviceNotFound).
	ConfigDevice(ctx context.Context, deviceID string) (DeviceInfo, error)
	// ConfigHistory lists a device's kept rendered configurations, newest
	// first, with their bytes.
	ConfigHistory(ctx context.Context, deviceID string) ([]HistoryEntry, error)
	// GetManagement returns the state of the management channel to a
	// device, nil when it has none.
	GetManagement(ctx context.Context, deviceID string) (*Management, error)
	// ObserverCursor returns the Seq of the last event Observe handled, as
	// stored by an Op's ObserverCursor (false: none stored yet).
	ObserverCursor(ctx context.Context) (int64, bool, error)
}

// EncodeDoc encodes a JSON document the way it is stored.
func EncodeDoc(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// DecodeDoc decodes a stored JSON object, numbers as json.Number, so that a
// configuration renders the same bytes after a restart as before it.
func DecodeDoc(b []byte) (map[string]any, error) {
	if len(b) == 0 {
		return map[string]any{}, nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// Normalize returns doc as it will be after storing and reading it back.
func Normalize(doc map[string]any) (map[string]any, error) {
	if doc == nil {
		return map[string]any{}, nil
	}
	b, err := EncodeDoc(doc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return DecodeDoc(b)
}
