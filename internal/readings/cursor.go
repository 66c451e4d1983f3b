package readings

import (
	"encoding/base64"
	"strconv"
	"strings"
)

// Page sizes of QueryReadings.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// PageSize is the number of readings a page of q holds: Limit, or
// DefaultLimit when it is not positive, and never more than MaxLimit.
func (q Query) PageSize() int {
	switch {
	case q.Limit <= 0:
		return DefaultLimit
	case q.Limit > MaxLimit:
		return MaxLimit
	}
	return q.Limit
}

// EncodeCursor turns the position of the last reading of a page (its time
// in Unix microseconds and its id) into an opaque cursor. Every store uses
// this format, so a cursor means the same whatever the backend.
func EncodeCursor(tsMicro, id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("r1:" + strconv.FormatInt(tsMicro, 10) + ":" + strconv.FormatInt(id, 10)))
}

// DecodeCursor reads a cursor made by EncodeCursor; anything else is
// ErrBadCursor.
func DecodeCursor(c string) (tsMicro, id int64, err error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, 0, ErrBadCursor
	}
	parts := strings.Split(string(b), ":")
	if len(parts) != 3 || parts[0] != "r1" {
		return 0, 0, ErrBadCursor
	}
	ts, err1 := strconv.ParseInt(parts[1], 10, 64)
	id, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, ErrBadCursor
	}
	return ts, id, nil
}
