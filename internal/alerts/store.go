package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// Alert states.
const (
	StatePending      = "pending"
	StateActive       = "active"
	StateAcknowledged = "acknowledged"
	StateCleared      = "cleared"
)

// Errors of the package.
var (
	// ErrNotFound: no such alert, rule or silence.
	ErrNotFound = errors.New("not found")
	// ErrExists: a rule of that name exists already.
	ErrExists = errors.New("already exists")
	// ErrState: the alert is not in a state the operation applies to
	// (acknowledging a cleared alert).
	ErrState = errors.New("wrong alert state")
	// ErrReadOnly: a rule declared in the configuration file cannot be
	// changed over the API.
	ErrReadOnly = errors.New("declared in the configuration file")
)

// Alert is one alert: a problem a rule found on a device, from the moment
// its condition held until it was cleared. At most one alert per (rule,
// device) is open (not cleared); the store guarantees it.
type Alert struct {
	ID         string            `json:"id"`
	Rule       string            `json:"rule"`
	DeviceID   string            `json:"device_id"`
	DeviceType string            `json:"device_type"`
	Severity   string            `json:"severity"`
	State      string            `json:"state"`
	Message    string            `json:"message,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Value      any               `json:"value,omitempty"`
	Count      int64             `json:"count"`
	StartedAt  time.Time         `json:"started_at"`
	RaisedAt   *time.Time        `json:"raised_at,omitempty"`
	LastAt     time.Time         `json:"last_at"`
	AckAt      *time.Time        `json:"acknowledged_at,omitempty"`
	AckBy      string            `json:"acknowledged_by,omitempty"`
	AckNote    string            `json:"acknowledged_note,omitempty"`
	ClearedAt  *time.Time        `json:"cleared_at,omitempty"`
	ClearedBy  string            `json:"cleared_by,omitempty"` // "rule" when the condition ended
	ClearNote  string            `json:"cleared_note,omitempty"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

// Open reports whether the alert is not cleared.
func (a *Alert) Open() bool { return a.State != StateCleared }

// Query selects alerts, newest first (by started_at, then id).
type Query struct {
	States     []string
	Severity   string
	DeviceID   string
	DeviceType string
	Rule       string
	Limit      int // 0: 100; at most 1000
}

// StoredRule is a rule created over the API.
type StoredRule struct {
	Spec      RuleSpec
	CreatedAt time.Time
	CreatedBy string
}

// Silence keeps a rule, a device, or a rule on a device from raising
// alerts (and open ones from being announced again) until Until.
type Silence struct {
	ID        string    `json:"id"`
	Rule      string    `json:"rule,omitempty"`
	DeviceID  string    `json:"device_id,omitempty"`
	Until     time.Time `json:"until"`
	Note      string    `json:"note,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Store is the read side of alerts and the direct writes of rules and
// silences (no signal describes them). Both backends implement it, with
// their migrations 00300-00399.
type Store interface {
	// ListAlerts returns the alerts q selects.
	ListAlerts(ctx context.Context, q Query) ([]Alert, error)
	// GetAlert returns one alert; ErrNotFound.
	GetAlert(ctx context.Context, id string) (*Alert, error)
	// OpenAlerts returns every alert not cleared.
	OpenAlerts(ctx context.Context) ([]Alert, error)
	// AlertCursor returns the Seq of the last event the evaluator handled,
	// and false if it never saved one.
	AlertCursor(ctx context.Context) (int64, bool, error)

	InsertAlertRule(ctx context.Context, r StoredRule) error // ErrExists
	DeleteAlertRule(ctx context.Context, name string) error  // ErrNotFound
	ListAlertRules(ctx context.Context) ([]StoredRule, error)

	InsertSilence(ctx context.Context, s Silence) error
	DeleteSilence(ctx context.Context, id string) error // ErrNotFound
	// ListSilences returns the silences that end after now.
	ListSilences(ctx context.Context, now time.Time) ([]Silence, error)
}

// EncodeValue and DecodeValue are the stored form of an alert's value and
// labels (JSON), shared by the backends.
func EncodeValue(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode alert value: %w", err)
	}
	return b, nil
}

// DecodeValue: see EncodeValue.
func DecodeValue(b []byte, v any) error {
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode alert value: %w", err)
	}
	return nil
}

// alertDomain writes alerts and the evaluator's cursor through the write
// path, so that an alert, its event and the position in the event log it
// was decided at are one transaction. Ranks: docs/ARCHITECTURE.md.
var alertDomain = &commit.Domain{Name: "alerts", Rank: 43, Write: writeAlerts}

// TxStore is what the alerts' ops need of a commit transaction.
type TxStore interface {
	// InsertAlert adds an open alert; false if the (rule, device) has an
	// open alert already (the unique constraint).
	InsertAlert(ctx context.Context, a *Alert) (bool, error)
	// UpdateAlert writes an open alert's state, value, count, times and
	// notes; false if it is not open (or does not exist).
	UpdateAlert(ctx context.Context, a *Alert) (bool, error)
	// DeletePendingAlert removes a pending alert whose condition ended
	// before its for period passed; false if it is not pending.
	DeletePendingAlert(ctx context.Context, id string) (bool, error)
	// SaveAlertCursor stores the Seq of the last event the evaluator
	// handled.
	SaveAlertCursor(ctx context.Context, seq int64) error
}

// Kinds of AlertOp.
const (
	OpInsert = iota // a new open alert
	OpUpdate        // an open alert's new state
	OpDelete        // a pending alert that ended before its for period
)

// AlertOp writes one alert. A change whose insert finds an open alert of the
// same (rule, device), or whose update or delete finds the alert no longer
// open (pending), fails alone with commit.ErrConflict.
type AlertOp struct {
	Kind  int
	Alert Alert
}

// Domain implements commit.Op.
func (*AlertOp) Domain() *commit.Domain { return alertDomain }

// CursorOp saves the evaluator's cursor.
type CursorOp struct{ Seq int64 }

// Domain implements commit.Op.
func (*CursorOp) Domain() *commit.Domain { return alertDomain }

func writeAlerts(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	var cursor int64 = -1
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		switch op := p.Op.(type) {
		case *CursorOp:
			cursor = max(cursor, op.Seq)
		case *AlertOp:
			var ok bool
			a := &op.Alert
			switch op.Kind {
			case OpInsert:
				ok, err = s.InsertAlert(ctx, a)
			case OpUpdate:
				ok, err = s.UpdateAlert(ctx, a)
			default:
				ok, err = s.DeletePendingAlert(ctx, a.ID)
			}
			if err != nil {
				return fmt.Errorf("write alert %s: %w", a.ID, err)
			}
			if !ok {
				p.Change.Err = fmt.Errorf("alert %s (rule %s, device %s): %w", a.ID, a.Rule, a.DeviceID, commit.ErrConflict)
			}
		}
	}
	// One cursor write per batch: the highest.
	if cursor >= 0 {
		if err := s.SaveAlertCursor(ctx, cursor); err != nil {
			return fmt.Errorf("save alert cursor: %w", err)
		}
	}
	return nil
}

// Committer submits changes to the write path (*commit.Committer).
type Committer interface {
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}
