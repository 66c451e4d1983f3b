package commit

import "context"

// Store writes batches of changes. Commit writes all changes of the batch in
// one transaction and returns an error only if the transaction failed as a
// whole (then nothing of the batch is stored). Per-change outcomes are set
// on the changes (Duplicate, Err, and the Seq of each written event).
// Events of a change with Err or Duplicate set are not written.
type Store interface {
	Commit(ctx context.Context, batch []*Change) error
	// MaxMessageID returns the largest message id stored, so that IDs can
	// start above it after a restart.
	MaxMessageID(ctx context.Context) (int64, error)
}
