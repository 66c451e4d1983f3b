-- The generation of each device's newest MQTT session, as PostgreSQL
-- keeps it for cluster mode (its migration 00800): a presence change
-- carrying an older generation than the stored one does not apply and
-- writes no event (registry.DevicePatch.Session). One SQLite node never
-- sets it today; the column keeps both backends to one contract.

-- +goose Up
ALTER TABLE devices ADD COLUMN session_gen INTEGER;

-- +goose Down
ALTER TABLE devices DROP COLUMN session_gen;
