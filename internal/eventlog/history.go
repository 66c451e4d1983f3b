package eventlog

import (
	"context"

	"github.com/devicehub/devicehub/events"
)

// PresenceTypes are the event types of a device's presence history.
var PresenceTypes = []events.Type{events.DeviceConnected, events.DeviceDisconnected, events.DeviceStatusChanged}

// HistoryStore reads a device's stored presence history: its
// device_connected, device_disconnected and device_status_changed events,
// newest first, with Seq < before (0: the newest), at most limit.
type HistoryStore interface {
	PresenceHistory(ctx context.Context, deviceID string, before int64, limit int) ([]events.Event, error)
}
