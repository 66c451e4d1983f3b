package postgres

import (
	"context"
	"encoding/json"
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
	_, err = s.pool.Exec(ctx, `INSERT INTO command_jobs (id, command, payload, expires_in, target, status, targets, refused, refusal, created_at, finished_at)
		VALUES ($1,$2,$3::jsonb,$4,$5::jsonb,$6,$7,$8,$9,$10,$11)`, j.ID, j.Command, jsonArg(j.Payload), j.ExpiresIn.Microseconds(), string(target),
		j.Status, j.Targets, j.Refused, j.Refusal, j.CreatedAt, j.FinishedAt)
	if err != nil {
		return fmt.Errorf("create command job %s: %w", j.ID, err)
	}
	return nil
}

// UpdateCommandJob implements commands.JobStore.
func (s *Store) UpdateCommandJob(ctx context.Context, j *commands.Job) error {
	_, err := s.pool.Exec(ctx, `UPDATE command_jobs SET status = $1, targets = $2, refused = $3, refusal = $4, finished_at = $5 WHERE id = $6`,
		j.Status, j.Targets, j.Refused, j.Refusal, j.FinishedAt, j.ID)
	if err != nil {
		return fmt.Errorf("update command job %s: %w", j.ID, err)
	}
	return nil
}

const jobColumns = `id, command, payload::text, expires_in, target::text, status, targets, refused, refusal, created_at, finished_at`

func scanJob(sc interface{ Scan(...any) error }) (commands.Job, error) {
	var j commands.Job
	var payload *string
	var target string
	var exp int64
	if err := sc.Scan(&j.ID, &j.Command, &payload, &exp, &target, &j.Status, &j.Targets, &j.Refused, &j.Refusal, &j.CreatedAt, &j.FinishedAt); err != nil {
		return j, err
	}
	if payload != nil {
		j.Payload = []byte(*payload)
	}
	if err := json.Unmarshal([]byte(target), &j.Target); err != nil {
		return j, fmt.Errorf("decode target of job %s: %w", j.ID, err)
	}
	j.ExpiresIn = time.Duration(exp) * time.Microsecond
	j.CreatedAt = j.CreatedAt.UTC()
	if j.FinishedAt != nil {
		*j.FinishedAt = j.FinishedAt.UTC()
	}
	return j, nil
}

// GetCommandJob implements commands.JobStore.
func (s *Store) GetCommandJob(ctx context.Context, id string) (*commands.Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobColumns+` FROM command_jobs WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("job %s: %w", id, commands.ErrJobNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get command job %s: %w", id, err)
	}
	return &j, nil
}

// RunningCommandJobs implements commands.JobStore.
func (s *Store) RunningCommandJobs(ctx context.Context) ([]commands.Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM command_jobs WHERE status = 'running' ORDER BY created_at, id`)
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
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM device_commands WHERE job_id = $1 GROUP BY status`, id)
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
	q := `SELECT ` + commandColumns + ` FROM device_commands WHERE job_id = $1 AND device_id > $2`
	args := []any{id, after}
	if status != "" {
		q += ` AND status = $3`
		args = append(args, status)
	}
	q += fmt.Sprintf(` ORDER BY device_id LIMIT %d`, max(limit, 1))
	return s.queryCommands(ctx, q, args...)
}
