//go:build !unix

package retention

import "errors"

// statfsFree is not implemented here: the floor is not enforced.
func statfsFree(string) (uint64, error) {
	return 0, errors.New("free disk space is not measured on this system")
}
