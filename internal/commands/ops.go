package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// commandDomain writes the commands of a batch (see commit.Op). Ranks: see
// docs/ARCHITECTURE.md, "Adding a domain".
var commandDomain = &commit.Domain{Name: "commands", Rank: 40, Write: writeCommands}

// TxStore is what commands need of a commit transaction. The transaction
// of every backend implements it.
type TxStore interface {
	// InsertCommand stores a new command of deviceID; false if its ID
	// exists.
	InsertCommand(ctx context.Context, deviceID string, c *Command) (bool, error)
	// UpdateCommand applies u to the command u.ID of deviceID if its
	// status is one of u.From (any when empty): the status, the result
	// unless nil, the send time and count when SentAt is set, and
	// finished_at when finished. False if no command matched.
	UpdateCommand(ctx context.Context, deviceID string, u *Change, finished bool) (bool, error)
}

// Command is a stored command (table device_commands).
type Command struct {
	ID         string
	DeviceID   string
	Command    string
	Payload    []byte // JSON, or nil
	Status     string // pending, sent, succeeded, failed, expired
	Result     []byte // JSON, or nil
	Sends      int    // how often it was published
	CreatedAt  time.Time
	ExpiresAt  time.Time
	SentAt     *time.Time // the last publish
	FinishedAt *time.Time // succeeded, failed or expired
	UpdatedAt  time.Time
}

// Change creates a device command (Create) or moves an existing one (ID)
// to Status, in batch order. An update whose command does not exist for
// the change's device, or whose current status is not one of From (when
// From is set), changes nothing and fails its change alone with
// commit.ErrConflict; so does a Create whose ID exists.
type Change struct {
	Create *Command
	ID     string
	Status string
	From   []string // the statuses the update applies to; empty: any
	Result []byte   // JSON, or nil to keep
	SentAt *time.Time
	At     time.Time // the update's time
}

func (*Change) Domain() *commit.Domain { return commandDomain }

func finalStatus(s string) bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusExpired
}

func writeCommands(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		ch := p.Change
		if !ch.Live() {
			continue
		}
		c := p.Op.(*Change)
		if n := c.Create; n != nil {
			ok, err := s.InsertCommand(ctx, ch.DeviceID, n)
			if err != nil {
				return fmt.Errorf("insert command %s: %w", n.ID, err)
			}
			if !ok {
				ch.Err = fmt.Errorf("command %s exists: %w", n.ID, commit.ErrConflict)
			}
			continue
		}
		ok, err := s.UpdateCommand(ctx, ch.DeviceID, c, finalStatus(c.Status))
		if err != nil {
			return fmt.Errorf("update command %s: %w", c.ID, err)
		}
		if !ok {
			ch.Err = fmt.Errorf("command %s: %w", c.ID, commit.ErrConflict)
		}
	}
	return nil
}
