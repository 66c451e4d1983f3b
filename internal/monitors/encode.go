package monitors

import (
	"math"
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
//
// Its memory is bounded by bytes too (budget): the encodings (their
// capacity: an encoder's buffer may have grown past its length) are
// counted in the order they were cached (a ring of 2×cacheSlots entries, one per
// encoding) and the oldest are dropped from their slots until the bytes
// counted fit the budget again (the newest is kept, however large). With
// small events the ring's count is the bound; with large payloads (a
// 64 KiB reading, 32768 slots, two formats: 4 GiB) the budget is. An
// encoding replaced in its slot before it leaves the ring is still
// counted until then, so the bytes counted are never fewer than those
// held.
type encodeCache struct {
	locks [cacheLocks]sync.Mutex
	slots []encSlot

	// Taken after no slot lock; eviction takes a slot's lock under it.
	fmu    sync.Mutex
	order  []cachedEnc // the encodings counted, oldest first from order[start] (circular)
	start  int
	n      int
	bytes  int64
	budget int64
}

const (
	cacheSlots = 1 << 15 // a power of two
	cacheLocks = 64
)

type encSlot struct {
	seq       int64
	json, xml []byte
}

// cachedEnc is an encoding counted by the cache's byte bound.
type cachedEnc struct {
	seq  int64
	size uint32
	xml  bool
}

func newEncodeCache(budget int64) *encodeCache {
	return &encodeCache{slots: make([]encSlot, cacheSlots), order: make([]cachedEnc, 2*cacheSlots), budget: budget}
}

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
	xml := format == monitorclient.FormatXML
	mu.Lock()
	if sl.seq != e.Seq {
		*sl = encSlot{seq: e.Seq}
	}
	if xml {
		sl.xml = b
	} else {
		sl.json = b
	}
	mu.Unlock()
	c.count(cachedEnc{seq: e.Seq, size: uint32(min(cap(b), math.MaxUint32)), xml: xml})
	return b, nil
}

// count adds a cached encoding to the byte bound and drops the oldest
// encodings until the bound holds.
func (c *encodeCache) count(ce cachedEnc) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	if c.n == len(c.order) {
		c.evict()
	}
	c.order[(c.start+c.n)%len(c.order)] = ce
	c.n++
	c.bytes += int64(ce.size)
	for c.n > 1 && c.bytes > c.budget {
		c.evict()
	}
}

// evict drops the oldest encoding counted from its slot (if the slot
// still holds that event). Called with fmu held.
func (c *encodeCache) evict() {
	old := c.order[c.start]
	c.start = (c.start + 1) % len(c.order)
	c.n--
	c.bytes -= int64(old.size)
	i := int(old.seq & (cacheSlots - 1))
	mu := &c.locks[i%cacheLocks]
	mu.Lock()
	if sl := &c.slots[i]; sl.seq == old.seq {
		if old.xml {
			sl.xml = nil
		} else {
			sl.json = nil
		}
	}
	mu.Unlock()
}

// stats returns the encodings counted and their bytes.
func (c *encodeCache) stats() (int, int64) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return c.n, c.bytes
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
