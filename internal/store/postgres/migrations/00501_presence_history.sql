-- +goose Up
-- A device's presence history for the dashboard (connections,
-- disconnections, status changes), without indexing every data event.
CREATE INDEX events_presence ON events (device_id, seq)
    WHERE type IN ('device_connected', 'device_disconnected', 'device_status_changed');

-- +goose Down
DROP INDEX events_presence;
