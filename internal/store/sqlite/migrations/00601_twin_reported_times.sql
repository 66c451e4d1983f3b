-- Twin: when each top-level reported key was last reported, a JSON object
-- of key → RFC 3339 time (internal/twin).

-- +goose Up
ALTER TABLE device_twins ADD COLUMN reported_times TEXT NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE device_twins DROP COLUMN reported_times;
