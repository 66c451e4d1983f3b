-- alive_at is when the firmware scheduler last worked on a rollout (Unix
-- microseconds; it writes it every few seconds). At start, the time since
-- then is the hub's downtime, which the timeouts of the devices in
-- progress do not count.

-- +goose Up
ALTER TABLE firmware_rollouts ADD COLUMN alive_at INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE firmware_rollouts DROP COLUMN alive_at;
