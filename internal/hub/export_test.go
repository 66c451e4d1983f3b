package hub

import (
	"context"
	"log/slog"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/config"
)

// HoldConfigObserver holds h's configuration observer back until hold is
// closed; call it before Run.
func HoldConfigObserver(h *Hub, hold <-chan struct{}) { h.observerHold = hold }

// NewWithCommits is New with the store the committer writes to wrapped by
// wrap, and the bounds of the stop set: the broker's ShutdownGrace, the
// committer's StopTimeout and the wait for the producers (all three when
// stop is not zero; derived from it).
func NewWithCommits(ctx context.Context, cfg *config.Config, log *slog.Logger, wrap func(commit.Store) commit.Store, stop time.Duration) (*Hub, error) {
	return newHub(ctx, cfg, log, testOptions{wrapCommits: wrap, shutdownGrace: stop, commitStop: stop / 2, frontStop: 2 * stop})
}

// CommitterDone is closed once the committer's loop ended (commit.Committer.Done).
func CommitterDone(h *Hub) <-chan struct{} { return h.committer.Done() }
