-- Commands: the delivered state, first and last send times, the fleet job
-- that created a command; "pending" is now called "queued"
-- (internal/commands).

-- +goose Up
ALTER TABLE device_commands ADD COLUMN first_sent_at INTEGER;
ALTER TABLE device_commands ADD COLUMN delivered_at INTEGER;
ALTER TABLE device_commands ADD COLUMN job_id TEXT;
UPDATE device_commands SET status = 'queued' WHERE status = 'pending';
UPDATE device_commands SET first_sent_at = sent_at WHERE sent_at IS NOT NULL;
DROP INDEX device_commands_open;
CREATE INDEX device_commands_open ON device_commands (expires_at) WHERE status IN ('queued', 'sent', 'delivered');
CREATE INDEX device_commands_job ON device_commands (job_id, device_id) WHERE job_id IS NOT NULL;

-- +goose Down
DROP INDEX device_commands_job;
DROP INDEX device_commands_open;
UPDATE device_commands SET status = 'pending' WHERE status = 'queued';
UPDATE device_commands SET status = 'sent' WHERE status = 'delivered';
UPDATE device_commands SET status = 'expired' WHERE status = 'canceled';
CREATE INDEX device_commands_open ON device_commands (expires_at) WHERE status IN ('pending', 'sent');
ALTER TABLE device_commands DROP COLUMN job_id;
ALTER TABLE device_commands DROP COLUMN delivered_at;
ALTER TABLE device_commands DROP COLUMN first_sent_at;
