package readings

import (
	"errors"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, tc := range []struct{ ts, id int64 }{{0, 0}, {1795321853586881, 42}, {-5, 7}} {
		ts, id, err := DecodeCursor(EncodeCursor(tc.ts, tc.id))
		if err != nil || ts != tc.ts || id != tc.id {
			t.Errorf("round trip of (%d, %d) = (%d, %d, %v)", tc.ts, tc.id, ts, id, err)
		}
	}
}

func TestDecodeCursorRefuses(t *testing.T) {
	for name, c := range map[string]string{
		"not base64":    "!!!",
		"wrong version": EncodeCursor(1, 2)[:3] + "x",
		"empty":         "",
		"two parts":     "cjE6MQ",   // "r1:1"
		"not numbers":   "cjE6YTpi", // "r1:a:b"
	} {
		if _, _, err := DecodeCursor(c); !errors.Is(err, ErrBadCursor) {
			t.Errorf("%s: err = %v, want ErrBadCursor", name, err)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(EncodeCursor(1, 2))
	f.Add("cjE6YTpi")
	f.Fuzz(func(t *testing.T, c string) {
		ts, id, err := DecodeCursor(c)
		if err == nil {
			if ts2, id2, err2 := DecodeCursor(EncodeCursor(ts, id)); err2 != nil || ts2 != ts || id2 != id {
				t.Fatalf("re-encoded cursor of %q does not round-trip", c)
			}
		}
	})
}

func TestPageSize(t *testing.T) {
	for _, tc := range []struct{ limit, want int }{{0, DefaultLimit}, {-1, DefaultLimit}, {5, 5}, {MaxLimit + 1, MaxLimit}} {
		if got := (Query{Limit: tc.limit}).PageSize(); got != tc.want {
			t.Errorf("PageSize(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}
