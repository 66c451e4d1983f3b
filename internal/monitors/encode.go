package monitors

import (
	"sync"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/monitorclient"
)

// encodeCache keeps the encoding of recent events per format, so that an
// event is encoded once however many monitors (of that format) deliver it:
// a monitor assembles its batch from the encoded events
// (monitorclient.EncodeEncoded) and only its compression is its own. It
// is a ring indexed by Seq: an event's slot is overwritten by the event
// cacheSlots later, by which time the monitors that keep up have sent it
// (a monitor far behind encodes again, which is only slower).
type encodeCache struct {
	locks [cacheLocks]sync.Mutex
	slots []encSlot
}

const (
	cacheSlots = 1 << 15 // a power of two
	cacheLocks = 64
)

type encSlot struct {
	seq       int64
	json, xml []byte
}

func newEncodeCache() *encodeCache { return &encodeCache{slots: make([]encSlot, cacheSlots)} }

// get returns e encoded in format, from the cache or encoded now.
func (c *encodeCache) get(e *events.Event, format string) ([]byte, error) {
	i := int(e.Seq & (cacheSlots - 1))
	mu := &c.locks[i%cacheLocks]
	mu.Lock()
	sl := &c.slots[i]
	if sl.seq == e.Seq {
		if b := sl.pick(format); b != nil {
			mu.Unlock()
			return b, nil
		}
	}
	mu.Unlock()
	b, err := monitorclient.EncodeEvent(e, format)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	if sl.seq != e.Seq {
		*sl = encSlot{seq: e.Seq}
	}
	if format == monitorclient.FormatXML {
		sl.xml = b
	} else {
		sl.json = b
	}
	mu.Unlock()
	return b, nil
}

func (sl *encSlot) pick(format string) []byte {
	if format == monitorclient.FormatXML {
		return sl.xml
	}
	return sl.json
}

// encodeBatch encodes a monitor's delivery from the cached encodings of
// its events.
func (sd *sender) encodeBatch(dst []byte, deliveryID string, evs []*events.Event) ([]byte, error) {
	frags := sd.frags[:0]
	defer func() { clear(frags); sd.frags = frags[:0] }()
	for _, e := range evs {
		f, err := sd.svc.enc.get(e, sd.spec.Format)
		if err != nil {
			return nil, err
		}
		frags = append(frags, f)
	}
	return sd.encoder.AppendEncoded(dst, sd.id, deliveryID, frags, sd.spec.Format, sd.spec.Compression)
}
