package sdk

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The local database is one bbolt file. bbolt was chosen over SQLite for
// this store because it is pure Go, has one writer and fsyncs every
// committed transaction (so "Enqueue returned" means "on disk"), keeps keys
// sorted (the outbox is ordered by its big-endian sequence number) and
// holds a file lock, so two processes cannot share one device database.
var (
	bucketMeta   = []byte("meta")   // credentials, provisioning, twin state
	bucketOutbox = []byte("outbox") // seq → entry: what waits for the hub's PUBACK
	bucketInbox  = []byte("inbox")  // seq → inbound: commands the application has not handled yet
	bucketDone   = []byte("done")   // command id → unix ms: handled commands, against redelivery

	keyCredentials      = []byte("credentials")
	keyRevoked          = []byte("revoked")
	keyProvisioningOp   = []byte("provisioning_op")
	keyDesired          = []byte("desired")
	keyDesiredDelivered = []byte("desired_delivered")
	keyConfigNotice     = []byte("config_notice") // the latest configuration notice
	keyConfigState      = []byte("config_state")  // the notice handled last, the checksum applied last
)

// keepDone is how many handled command ids are remembered.
const keepDone = 1000

// Entry kinds of the outbox.
const (
	kindData         byte = 1 // a message of a stream
	kindReported     byte = 2 // a reported properties patch
	kindResult       byte = 3 // a command result
	kindConfigStatus byte = 4 // a configuration report
)

// entry is one outbox record: a message (or one chunk of one) as it will be
// published.
type entry struct {
	seq         uint64
	kind        byte
	topic       string
	contentType string
	msgID       string
	chunkIndex  uint32 // with chunkCount > 0: this is chunk chunkIndex of chunkCount
	chunkCount  uint32
	payload     []byte
}

// final reports whether acknowledging e completes its message.
func (e *entry) final() bool { return e.chunkCount == 0 || e.chunkIndex == e.chunkCount-1 }

// entryVersion is the first byte of an encoded entry.
const entryVersion = 1

func (e *entry) encode() []byte {
	b := make([]byte, 0, 16+len(e.topic)+len(e.contentType)+len(e.msgID)+len(e.payload))
	b = append(b, entryVersion, e.kind)
	b = binary.AppendUvarint(b, uint64(e.chunkIndex))
	b = binary.AppendUvarint(b, uint64(e.chunkCount))
	for _, s := range []string{e.topic, e.contentType, e.msgID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, e.payload...)
}

var errCorrupt = errors.New("corrupt entry")

func decodeEntry(seq uint64, b []byte) (entry, error) {
	e := entry{seq: seq}
	if len(b) < 2 || b[0] != entryVersion {
		return e, errCorrupt
	}
	e.kind = b[1]
	b = b[2:]
	var vals [2]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 || v > 1<<31 {
			return e, errCorrupt
		}
		vals[i], b = v, b[n:]
	}
	e.chunkIndex, e.chunkCount = uint32(vals[0]), uint32(vals[1])
	var strs [3]string
	for i := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return e, errCorrupt
		}
		strs[i] = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	e.topic, e.contentType, e.msgID = strs[0], strs[1], strs[2]
	e.payload = bytes.Clone(b)
	return e, nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// store is the device's local database. Writes go through a group writer:
// concurrent writers share one transaction (one fsync) while a single
// writer gets its own at once, with no linger.
type store struct {
	db *bolt.DB

	mu      sync.Mutex
	queue   []*writeReq
	writing bool
}

type writeReq struct {
	fn   func(tx *bolt.Tx) error
	err  error
	done chan struct{}
}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketOutbox, bucketInbox, bucketDone} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// write runs fn in a read-write transaction that is committed (fsynced)
// before write returns. Calls that arrive while a transaction commits are
// gathered into the next one. If a shared transaction fails, each of its
// functions is retried alone, so that one failing caller does not fail the
// others.
func (s *store) write(fn func(tx *bolt.Tx) error) error {
	r := &writeReq{fn: fn, done: make(chan struct{})}
	s.mu.Lock()
	s.queue = append(s.queue, r)
	if s.writing {
		s.mu.Unlock()
		<-r.done
		return r.err
	}
	s.writing = true
	for len(s.queue) > 0 {
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		s.commit(batch)
		s.mu.Lock()
	}
	s.writing = false
	s.mu.Unlock()
	<-r.done
	return r.err
}

func (s *store) commit(batch []*writeReq) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range batch {
			if err := r.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		for _, r := range batch {
			r.err = s.db.Update(r.fn)
			close(r.done)
		}
		return
	}
	for _, r := range batch {
		r.err = err
		close(r.done)
	}
}

// appendEntries adds es to the outbox in one go, giving each its sequence
// number.
func appendEntries(tx *bolt.Tx, es []entry) error {
	b := tx.Bucket(bucketOutbox)
	for i := range es {
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		es[i].seq = seq
		if err := b.Put(seqKey(seq), es[i].encode()); err != nil {
			return err
		}
	}
	return nil
}

// next returns the first outbox entry after seq.
func (s *store) next(after uint64) (entry, bool, error) {
	var (
		e  entry
		ok bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketOutbox).Cursor().Seek(seqKey(after + 1))
		if k == nil {
			return nil
		}
		var err error
		e, err = decodeEntry(binary.BigEndian.Uint64(k), v)
		ok = err == nil
		return err
	})
	return e, ok, err
}

// run returns the entries after seq for which ok holds, consecutive, at
// most n of them and (but for the first) at most maxBytes of payload.
func (s *store) run(after uint64, n, maxBytes int, ok func(*entry) bool) ([]entry, error) {
	var out []entry
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketOutbox).Cursor()
		size := 0
		for k, v := cur.Seek(seqKey(after + 1)); k != nil && len(out) < n; k, v = cur.Next() {
			e, err := decodeEntry(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			if !ok(&e) || (len(out) > 0 && size+len(e.payload) > maxBytes) {
				break
			}
			size += len(e.payload)
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// outboxState counts the messages waiting (a chunked message counts once)
// and returns the first and last sequence numbers in the outbox, and the
// last ever given.
type outboxState struct {
	messages, reported int64
	first, last        uint64
}

func (s *store) outboxState() (outboxState, error) {
	var st outboxState
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		st.last = b.Sequence()
		return b.ForEach(func(k, v []byte) error {
			e, err := decodeEntry(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			if st.first == 0 {
				st.first = e.seq
			}
			if e.final() {
				st.messages++
				if e.kind == kindReported {
					st.reported++
				}
			}
			return nil
		})
	})
	return st, err
}

func deleteSeqs(tx *bolt.Tx, seqs []uint64) error {
	b := tx.Bucket(bucketOutbox)
	for _, s := range seqs {
		if err := b.Delete(seqKey(s)); err != nil {
			return err
		}
	}
	return nil
}

func getJSON(tx *bolt.Tx, key []byte, v any) (bool, error) {
	b := tx.Bucket(bucketMeta).Get(key)
	if b == nil {
		return false, nil
	}
	return true, json.Unmarshal(b, v)
}

func putJSON(tx *bolt.Tx, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(key, b)
}

func (s *store) getJSON(key []byte, v any) (found bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		found, err = getJSON(tx, key, v)
		return err
	})
	return found, err
}

func (s *store) putJSON(key []byte, v any) error {
	return s.write(func(tx *bolt.Tx) error { return putJSON(tx, key, v) })
}

func (s *store) deleteKey(key []byte) error {
	return s.write(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(key) })
}

// inbound is a message from the hub kept until the application handled it.
type inbound struct {
	Topic   string          `json:"topic"`
	Command string          `json:"command_id,omitempty"`
	Payload json.RawMessage `json:"payload"`
}

// addInbound stores a command unless it was stored or handled before.
func (s *store) addInbound(in inbound) (added bool, err error) {
	err = s.write(func(tx *bolt.Tx) error {
		added = false
		if tx.Bucket(bucketDone).Get([]byte(in.Command)) != nil {
			return nil
		}
		b := tx.Bucket(bucketInbox)
		dup := false
		if err := b.ForEach(func(_, v []byte) error {
			var o inbound
			if json.Unmarshal(v, &o) == nil && o.Command == in.Command {
				dup = true
			}
			return nil
		}); err != nil || dup {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		v, err := json.Marshal(in)
		if err != nil {
			return err
		}
		added = true
		return b.Put(seqKey(seq), v)
	})
	return added, err
}

// nextInbound returns the oldest unhandled inbound message.
func (s *store) nextInbound() (uint64, inbound, bool, error) {
	var (
		seq uint64
		in  inbound
		ok  bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketInbox).Cursor().First()
		if k == nil {
			return nil
		}
		seq, ok = binary.BigEndian.Uint64(k), true
		return json.Unmarshal(v, &in)
	})
	return seq, in, ok, err
}

// finishInbound removes a handled command and queues its result, in one
// transaction: a crash leaves either the command to handle again or the
// result to send.
func (s *store) finishInbound(seq uint64, commandID string, result []entry) error {
	return s.write(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketInbox).Delete(seqKey(seq)); err != nil {
			return err
		}
		done := tx.Bucket(bucketDone)
		var ts [8]byte
		binary.BigEndian.PutUint64(ts[:], uint64(time.Now().UnixMilli()))
		if err := done.Put([]byte(commandID), ts[:]); err != nil {
			return err
		}
		if n := done.Stats().KeyN; n > keepDone {
			if err := pruneDone(done, n-keepDone); err != nil {
				return err
			}
		}
		return appendEntries(tx, result)
	})
}

// pruneDone deletes the n oldest handled command ids.
func pruneDone(b *bolt.Bucket, n int) error {
	type kv struct {
		k  []byte
		ts uint64
	}
	var all []kv
	_ = b.ForEach(func(k, v []byte) error {
		if len(v) == 8 {
			all = append(all, kv{bytes.Clone(k), binary.BigEndian.Uint64(v)})
		}
		return nil
	})
	for range n {
		if len(all) == 0 {
			break
		}
		oldest := 0
		for i := range all {
			if all[i].ts < all[oldest].ts {
				oldest = i
			}
		}
		if err := b.Delete(all[oldest].k); err != nil {
			return err
		}
		all = append(all[:oldest], all[oldest+1:]...)
	}
	return nil
}
