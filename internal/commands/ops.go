package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// commandDomain writes the commands of a batch (see commit.Op). Ranks: see
// docs/ARCHITECTURE.md, "Adding a domain". It ranks before the message log
// (20): when a device's answer finds the command no longer open (it
// expired or was canceled in between), its change fails before its
// message is recorded as accepted, and ingest records the message as
// refused instead (ErrFinished). One domain for every command op keeps
// them in batch order.
var commandDomain = &commit.Domain{Name: "commands", Rank: 15, Write: writeCommands}

// TxStore is what commands need of a commit transaction. The transaction
// of every backend implements it.
type TxStore interface {
	// InsertCommand stores a new command of deviceID; false if its ID
	// exists.
	InsertCommand(ctx context.Context, deviceID string, c *Command) (bool, error)
	// UpdateCommand applies u to the command u.ID of deviceID if its
	// status is one of u.From (never empty): the status, the result
	// unless nil, the send times and count when SentAt is set (the first
	// send time only if none), delivered_at when DeliveredAt is set and
	// none is stored yet (the first delivery), and finished_at when
	// finished. False if no command matched.
	UpdateCommand(ctx context.Context, deviceID string, u *Change, finished bool) (bool, error)
}

// Command is a stored command (table device_commands).
type Command struct {
	ID          string
	DeviceID    string
	Command     string
	Payload     []byte // JSON, or nil
	Status      string // queued, sent, delivered, succeeded, failed, expired, canceled
	Result      []byte // JSON, or nil
	Sends       int    // how often it was handed to the broker (1 + resends)
	CreatedAt   time.Time
	ExpiresAt   time.Time
	FirstSentAt *time.Time // the first hand-over to the broker
	SentAt      *time.Time // the last hand-over (the last resend)
	DeliveredAt *time.Time // the device's PUBACK
	FinishedAt  *time.Time // succeeded, failed, expired or canceled
	UpdatedAt   time.Time
	JobID       string // the fleet job that created it, "" for none
}

// Resends is how often the command was handed to the broker again.
func (c *Command) Resends() int { return max(c.Sends-1, 0) }

// Change creates a device command (Create) or moves an existing one (ID)
// to Status, in batch order. An update applies only while the command's
// status is one of From, which every transition names (the state it
// leaves): an update whose command does not exist for the change's
// device, or is in another state, changes nothing and fails its change
// alone with commit.ErrConflict (a device's answer: with ErrFinished); so
// does a Create whose ID exists.
type Change struct {
	Create      *Command
	ID          string
	Status      string
	From        []string // the statuses the update applies to
	Result      []byte   // JSON, or nil to keep
	SentAt      *time.Time
	DeliveredAt *time.Time
	At          time.Time // the update's time
}

func (*Change) Domain() *commit.Domain { return commandDomain }

func answerStatus(s string) bool { return s == StatusSucceeded || s == StatusFailed }

// finalStatus reports whether a command in status s is finished.
func finalStatus(s string) bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusExpired, StatusCanceled:
		return true
	}
	return false
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
		if len(c.From) == 0 {
			return fmt.Errorf("update command %s to %s: no predecessor states (a programming error)", c.ID, c.Status)
		}
		ok, err := s.UpdateCommand(ctx, ch.DeviceID, c, finalStatus(c.Status))
		if err != nil {
			return fmt.Errorf("update command %s: %w", c.ID, err)
		}
		switch {
		case ok:
		case answerStatus(c.Status):
			ch.Err = fmt.Errorf("command %s is no longer open: %w", c.ID, ErrFinished)
		default:
			ch.Err = fmt.Errorf("command %s: %w", c.ID, commit.ErrConflict)
		}
	}
	return nil
}
