package monitors

import (
	"encoding/json"
	"math/bits"

	"github.com/devicehub/devicehub/events"
)

// The tail's byte bound counts an estimate of the heap each event keeps
// alive while the tail holds it (retainedSize), not its encoded length: a
// reading of four numbers is ~190 bytes of JSON but ~700 bytes of Go
// values (the event, its args struct, the readings' backing array, a map
// of four entries with their boxed values). The estimate walks the values
// of device_data_received, the event that comes at ingest rates and the
// only one whose size the devices choose, without encoding anything; every
// other event (a few a second: presence, commands, configuration, alerts)
// counts its JSON-encoded args plus a fixed overhead. It errs on the side
// of counting too much (keys the ingest interns and shares between events
// are counted in every event), so the bound holds; TestRetainedSize
// compares it with the heap measured for typical payloads.
const (
	// eventOverhead is what every event costs in the tail besides its
	// args: the events.Event (96 bytes), its ring slot and size (12).
	eventOverhead = 96 + 12
	// dataOverhead is a *events.DataReceived with no readings (96 bytes).
	dataOverhead = 96
	// readingSize is an events.Reading in the readings' backing array.
	readingSize = 48
	// otherOverhead is added to the JSON length of other events' args
	// (their struct and the string headers in it).
	otherOverhead = 64
	// ifaceSize is an interface value in a slice; boxedWord a number
	// boxed in an interface (8 bytes, its own allocation).
	ifaceSize = 16
	boxedWord = 8
	// stringHeader is a string boxed in an interface.
	stringHeader = 16
)

// retainedSize estimates the bytes e keeps alive (see above).
func retainedSize(e *events.Event) int64 {
	n := int64(eventOverhead + len(e.DeviceID) + len(e.DeviceType))
	switch a := e.Args.(type) {
	case *events.DataReceived:
		n += dataOverhead + int64(len(a.MsgID)+len(a.Topic)+len(a.Stream)+len(a.Transport))
		n += int64(cap(a.Readings)) * readingSize
		for i := range a.Readings {
			n += int64(len(a.Readings[i].Stream)) + mapSize(a.Readings[i].Values)
		}
	case nil:
	default:
		var c counter
		if err := json.NewEncoder(&c).Encode(a); err != nil {
			c = 0
		}
		n += otherOverhead + int64(c)
	}
	return n
}

// counter counts the bytes written to it.
type counter int

func (c *counter) Write(b []byte) (int, error) {
	*c += counter(len(b))
	return len(b), nil
}

// mapSize estimates a map[string]any of JSON values: the map (Go's
// swiss tables: groups of 8 slots of a 16-byte key and a 16-byte value
// with 8 control bytes, filled up to 7/8, plus the map's header) and,
// per entry, the key's bytes and the value's.
func mapSize(m map[string]any) int64 {
	n := mapTableSize(len(m))
	for k, v := range m {
		n += int64(len(k)) + valueSize(v)
	}
	return n
}

// mapTableSize is the memory of a map[string]any of n entries, empty.
func mapTableSize(n int) int64 {
	const header, group = 48, 8 + 8*(16+16)
	if n <= 8 {
		return header + group + 24 // one group, in a 288-byte size class
	}
	slots := 1 << bits.Len(uint((n*8+6)/7-1)) // a power of two, load ≤ 7/8
	// The groups' array is a large allocation, rounded up to its size
	// class: up to an eighth more.
	return header + 64 + int64(slots/8)*group*9/8
}

// valueSize estimates what a JSON value decoded as any holds beyond its
// interface word.
func valueSize(v any) int64 {
	switch x := v.(type) {
	case nil, bool:
		return 0 // static
	case string:
		return stringHeader + int64(len(x))
	case map[string]any:
		return mapSize(x)
	case []any:
		n := int64(24 + cap(x)*ifaceSize)
		for _, e := range x {
			n += valueSize(e)
		}
		return n
	default: // float64, json.Number-sized values
		return boxedWord
	}
}
