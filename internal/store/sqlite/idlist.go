package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// appendIDList appends ids, ascending, as the uvarint of the first and
// then of each one's distance from the one before (message_batches_dead's
// firsts: a chunk's batch rows are a few bytes each).
func appendIDList(dst []byte, ids []int64) []byte {
	var prev int64
	for i, id := range ids {
		if i == 0 {
			dst = binary.AppendUvarint(dst, uint64(id))
		} else {
			dst = binary.AppendUvarint(dst, uint64(id-prev))
		}
		prev = id
	}
	return dst
}

// decodeIDList decodes appendIDList's encoding; ids must be positive and
// strictly ascending.
func decodeIDList(b []byte) ([]int64, error) {
	var ids []int64
	var prev int64
	for len(b) > 0 {
		v, n := binary.Uvarint(b)
		if n <= 0 || n != uvarintLen(v) {
			return nil, fmt.Errorf("id list: bad uvarint at id %d", len(ids))
		}
		b = b[n:]
		if v == 0 || v > 1<<62 {
			return nil, fmt.Errorf("id list: id %d: step %d out of range", len(ids), v)
		}
		id := prev + int64(v)
		if id <= prev {
			return nil, errIDOverflow
		}
		ids = append(ids, id)
		prev = id
	}
	return ids, nil
}

var errIDOverflow = errors.New("id list: ids overflow int64")

// uvarintLen is the length of v's shortest uvarint: the only one
// decodeIDList takes, so that a list has one encoding.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
