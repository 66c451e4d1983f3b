package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commands"
)

var _ commands.JobStore = (*Store)(nil)

// CreateCommandJob implements commands.JobStore.
func (s *Store) CreateCommandJob(ctx context.Context, j *commands.Job) error {
	target, err := json.Marshal(j.Target)
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO command_jobs (id, command, payload, expires_in, target, status, targets, refused, refusal, created_at, finished_at)
		VALUES (?,?,?,?,?,?,?,?,?,?,?)`, j.ID, j.Command, jsonText(j.Payload), j.ExpiresIn.Microseconds(), string(target), j.Status,
		j.Targets, j.Refused, j.Refusal, j.CreatedAt.UnixMicro(), microsPtr(j.FinishedAt))
	if err != nil {
		return fmt.Errorf("create command job %s: %w", j.ID, err)
	}
	return nil
}

// UpdateCommandJob implements commands.JobStore.
func (s *Store) UpdateCommandJob(ctx context.Context, j *commands.Job) error {
	_, err := s.w.ExecContext(ctx, `UPDATE command_jobs SET status = ?, targets = ?, refused = ?, refusal = ?, finished_at = ? WHERE id = ?`,
		j.Status, j.Targets, j.Refused, j.Refusal, microsPtr(j.FinishedAt), j.ID)
	if err != nil {
		return fmt.Errorf("update command job %s: %w", j.ID, err)
	}
	return nil
}

const jobColumns = `id, command, payload, expires_in, target, status, targets, refused, refusal, created_at, finished_at`

func scanJob(sc interface{ Scan(...any) error }) (commands.Job, error) {
	var j commands.Job
	var payload sql.NullString
	var target string
	var exp, created int64
	var fin sql.NullInt64
	if err := sc.Scan(&j.ID, &j.Command, &payload, &exp, &target, &j.Status, &j.Targets, &j.Refused, &j.Refusal, &created, &fin); err != nil {
		return j, err
	}
	if payload.Valid {
		j.Payload = []byte(payload.String)
	}
	if err := json.Unmarshal([]byte(target), &j.Target); err != nil {
		return j, fmt.Errorf("decode target of job %s: %w", j.ID, err)
	}
	j.ExpiresIn = time.Duration(exp) * time.Microsecond
	j.CreatedAt, j.FinishedAt = micros(created), nullMicros(fin)
	return j, nil
}

// GetCommandJob implements commands.JobStore.
func (s *Store) GetCommandJob(ctx context.Context, id string) (*commands.Job, error) {
	j, err := scanJob(s.r.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM command_jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", id, commands.ErrJobNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get command job %s: %w", id, err)
	}
	return &j, nil
}

// RunningCommandJobs implements commands.JobStore.
func (s *Store) RunningCommandJobs(ctx context.Context) ([]commands.Job, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+jobColumns+` FROM command_jobs WHERE status = 'running' ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list running command jobs: %w", err)
	}
	defer rows.Close()
	var out []commands.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list running command jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// CommandJobCounts implements commands.JobStore.
func (s *Store) CommandJobCounts(ctx context.Context, id string) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT status, count(*) FROM device_commands WHERE job_id = ? GROUP BY status`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// JobCommands implements commands.JobStore.
func (s *Store) JobCommands(ctx context.Context, id, status, after string, limit int) ([]commands.Command, error) {
	q := `SELECT ` + commandColumns + ` FROM device_commands WHERE job_id = ? AND device_id > ?`
	args := []any{id, after}
	if status != "" {
		q += ` AND status = ?`
		args = append(args, status)
	}
	q += ` ORDER BY device_id LIMIT ?`
	return s.queryCommands(ctx, q, append(args, max(limit, 1))...)
}
