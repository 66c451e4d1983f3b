package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Chunked messages.
//
// A message too large for one MQTT packet is sent in chunks on
// {topic}/chunks/{chunk_id}/{index}/{count}, where {topic} is the
// message's own topic (devices/{id}/data or devices/{id}/data/{stream}),
// chunk_id names the message (1 to 64 of A-Z a-z 0-9 . _ : -), index counts
// from 0 to count-1 (count at most MaxChunks) and every chunk carries the
// content type of the whole message (so a compressed message is compressed
// once, then cut). The chunks are sent in order; the last one (index
// count-1) must come last.
//
// Ack means stored: the hub holds chunks in memory only, so the PUBACK of
// a chunk before the last means "held", not "stored". The last chunk
// completes the message, which then goes through the whole pipeline like
// any message on {topic} (decompression, validation, msg_id dedup, commit),
// and its PUBACK means the message is stored. If the hub no longer holds
// every earlier chunk when the last one arrives (it restarted, the set
// timed out or was evicted for memory), the last chunk is answered as "not
// stored" (the device is disconnected without a PUBACK) and the device
// must send the whole message again from chunk 0. A device therefore keeps
// every chunk until the last one is acknowledged. A message's msg_id is in
// its payload, so a message completed twice is stored once.
//
// Memory is bounded: the reassembled size by the device type's payload
// limit (payload_too_large), the chunks held by all devices together by
// Options.ChunkMemory, and each device holds at most maxSetsPerDevice
// messages in progress (the oldest is dropped). The memory is shared
// fairly: when it is full, a chunk of a device takes the room of the
// oldest message of the device holding the most, if that one holds more
// than this device would with the chunk, else of a message of another
// device that got no chunk for stealIdle; only when there is none is the
// chunk not stored (the device comes back later). So devices that open
// messages and never finish them cannot starve the others for longer
// than stealIdle. A set not
// completed within Options.ChunkTimeout is dropped, and a device's sets
// are dropped when its last connection ends (ForgetDevice).

// MaxChunks is the most chunks one message may have.
const MaxChunks = 1024

// maxSetsPerDevice bounds the chunked messages one device has in progress.
const maxSetsPerDevice = 4

// maxChunkIDLen bounds a chunk id.
const maxChunkIDLen = 64

// Errors of chunked messages: the last chunk arrived but the message is not
// complete, or the hub holds too many chunks. Neither is stored; the device
// sends again.
var (
	ErrChunksIncomplete = errors.New("chunked message incomplete: earlier chunks are missing; send it again from chunk 0")
	ErrChunkMemory      = errors.New("too many chunks held; send again later")
)

// chunkTopic is a parsed chunk topic.
type chunkTopic struct {
	base         string // the message's own topic
	id           string
	index, count int
}

// parseChunkTopic recognises {devices/id/data[/stream]}/chunks/{id}/{i}/{n}.
// ok is false for topics of another shape; a topic of this shape with bad
// values returns a rejection.
func parseChunkTopic(topic string) (ct chunkTopic, ok bool, rej *Rejection) {
	// Every message passes here: a topic without a chunks level, the
	// usual one, is told apart without splitting it (an allocation per
	// message). A chunks level is never the first nor the last.
	if !strings.Contains(topic, "/chunks/") {
		return ct, false, nil
	}
	levels := strings.Split(topic, "/")
	n := len(levels)
	if (n != 7 && n != 8) || levels[0] != "devices" || levels[2] != "data" || levels[n-4] != "chunks" {
		return ct, false, nil
	}
	ct.base = strings.Join(levels[:n-4], "/")
	ct.id = levels[n-3]
	if len(ct.id) > maxChunkIDLen || !validStream(ct.id) {
		return ct, true, &Rejection{Code: CodeInvalidPayload, Reason: fmt.Sprintf("chunk id %q: 1 to %d of A-Z a-z 0-9 . _ : -", ct.id, maxChunkIDLen)}
	}
	var err1, err2 error
	ct.index, err1 = strconv.Atoi(levels[n-2])
	ct.count, err2 = strconv.Atoi(levels[n-1])
	if err1 != nil || err2 != nil || ct.count < 1 || ct.count > MaxChunks || ct.index < 0 || ct.index >= ct.count {
		return ct, true, &Rejection{Code: CodeInvalidPayload, Reason: fmt.Sprintf("chunk %s/%s: want index 0 to count-1 and count 1 to %d", levels[n-2], levels[n-1], MaxChunks)}
	}
	return ct, true, nil
}

// chunkSets holds the chunks of messages in progress.
type chunkSets struct {
	maxBytes int
	timeout  time.Duration

	mu        sync.Mutex
	sets      map[string]*chunkSet // device id + "\x00" + chunk id
	perDevice map[string]int       // sets in progress
	bytesOf   map[string]int       // bytes held
	held      int                  // bytes held
	lastSweep time.Time
}

type chunkSet struct {
	device      string
	base        string
	contentType string
	parts       [][]byte
	have, size  int
	started     time.Time
	touched     time.Time // the last chunk
}

func newChunkSets(maxBytes int, timeout time.Duration) *chunkSets {
	return &chunkSets{maxBytes: maxBytes, timeout: timeout, sets: map[string]*chunkSet{}, perDevice: map[string]int{}, bytesOf: map[string]int{}}
}

// drop forgets a set. Locked.
func (cs *chunkSets) drop(key string, s *chunkSet) {
	delete(cs.sets, key)
	cs.held -= s.size
	cs.bytesOf[s.device] -= s.size
	if cs.perDevice[s.device]--; cs.perDevice[s.device] <= 0 {
		delete(cs.perDevice, s.device)
		delete(cs.bytesOf, s.device)
	}
}

// forget drops every set of a device.
func (cs *chunkSets) forget(device string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.perDevice[device] == 0 {
		return
	}
	for k, s := range cs.sets {
		if s.device == device {
			cs.drop(k, s)
		}
	}
}

// stealIdle is how long a message in progress may go without a chunk
// before, when the memory is full, another device may take its room.
// Devices send the chunks of a message one after the other.
const stealIdle = time.Second

// makeRoom frees need bytes for device: first from the devices holding
// more than device would after adding need (their oldest message), then
// from messages of other devices that got no chunk for stealIdle (the
// least recently fed first). Locked.
func (cs *chunkSets) makeRoom(device string, need int, now time.Time) bool {
	for cs.held+need > cs.maxBytes {
		var top string
		most := 0
		for d, n := range cs.bytesOf {
			if d != device && n > most {
				top, most = d, n
			}
		}
		if top != "" && most > cs.bytesOf[device]+need {
			cs.dropOldest(top)
			continue
		}
		var idleKey string
		var idle *chunkSet
		for k, s := range cs.sets {
			if s.device != device && now.Sub(s.touched) >= stealIdle && (idle == nil || s.touched.Before(idle.touched)) {
				idleKey, idle = k, s
			}
		}
		if idle == nil {
			return false
		}
		cs.drop(idleKey, idle)
	}
	return true
}

// sweep drops sets older than the timeout, at most once a second unless
// forced. Locked.
func (cs *chunkSets) sweep(now time.Time, force bool) {
	if !force && now.Sub(cs.lastSweep) < time.Second {
		return
	}
	cs.lastSweep = now
	for k, s := range cs.sets {
		if now.Sub(s.started) > cs.timeout {
			cs.drop(k, s)
		}
	}
}

// add holds one chunk. It returns the whole message when this chunk
// completed it, nil when more chunks are expected.
func (cs *chunkSets) add(device, contentType string, ct chunkTopic, payload []byte, limit int, now time.Time) ([]byte, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.sweep(now, false)
	key := device + "\x00" + ct.id
	s := cs.sets[key]
	if s != nil && (len(s.parts) != ct.count || s.base != ct.base || s.contentType != contentType) {
		cs.drop(key, s) // the id was reused for another message
		s = nil
	}
	if s == nil {
		if ct.index == ct.count-1 && ct.count > 1 {
			return nil, ErrChunksIncomplete
		}
		if cs.perDevice[device] >= maxSetsPerDevice {
			cs.dropOldest(device)
		}
		s = &chunkSet{device: device, base: ct.base, contentType: contentType, parts: make([][]byte, ct.count), started: now}
		cs.sets[key] = s
		cs.perDevice[device]++
	}
	old := len(s.parts[ct.index])
	if s.size-old+len(payload) > limit {
		cs.drop(key, s)
		return nil, &Rejection{Code: CodePayloadTooLarge, Reason: fmt.Sprintf("chunked message is over the limit of %d bytes", limit)}
	}
	if ct.index == ct.count-1 {
		if s.have-btoi(s.parts[ct.index] != nil) != ct.count-1 {
			cs.drop(key, s)
			return nil, ErrChunksIncomplete
		}
		out := make([]byte, 0, s.size-old+len(payload))
		for _, p := range s.parts[:ct.count-1] {
			out = append(out, p...)
		}
		out = append(out, payload...)
		cs.drop(key, s)
		return out, nil
	}
	if cs.held-old+len(payload) > cs.maxBytes {
		cs.sweep(now, true)
		if cs.held-old+len(payload) > cs.maxBytes && !cs.makeRoom(device, len(payload)-old, now) {
			return nil, ErrChunkMemory
		}
		if cs.sets[key] != s { // swept: the message timed out meanwhile
			return nil, ErrChunksIncomplete
		}
	}
	if s.parts[ct.index] == nil {
		s.have++
	}
	s.parts[ct.index] = append([]byte{}, payload...)
	s.touched = now
	s.size += len(payload) - old
	cs.held += len(payload) - old
	cs.bytesOf[device] += len(payload) - old
	return nil, nil
}

// dropOldest drops the device's oldest set. Locked.
func (cs *chunkSets) dropOldest(device string) {
	var (
		oldestKey string
		oldest    *chunkSet
	)
	for k, s := range cs.sets {
		if s.device == device && (oldest == nil || s.started.Before(oldest.started)) {
			oldestKey, oldest = k, s
		}
	}
	if oldest != nil {
		cs.drop(oldestKey, oldest)
	}
}

// ForgetDevice drops the chunks a device holds: its last connection
// ended, and a device resends a chunked message from chunk 0 after a
// reconnect anyway.
func (p *Pipeline) ForgetDevice(deviceID string) { p.chunks.forget(deviceID) }

// reassemble holds chunks and hands a completed message on as a message on
// its own topic (see above).
func (p *Pipeline) reassemble() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			ct, ok, rej := parseChunkTopic(m.Req.Topic)
			if !ok {
				return next.Handle(ctx, m)
			}
			if rej != nil {
				return rej
			}
			whole, err := p.chunks.add(m.Req.DeviceID, m.Req.ContentType, ct, m.Req.Payload, m.info.maxPayload, m.Now)
			if err != nil {
				if errors.Is(err, ErrChunksIncomplete) || errors.Is(err, ErrChunkMemory) {
					return fmt.Errorf("chunk %d/%d of %s from %s: %w", ct.index, ct.count, ct.id, m.Req.DeviceID, err)
				}
				return err
			}
			if whole == nil {
				return nil // held, not stored: see the package comment on chunks
			}
			r := *m.Req
			r.Topic, r.Payload = ct.base, whole
			m.Req = &r
			return next.Handle(ctx, m)
		})
	}
}
