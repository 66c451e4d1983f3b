-- Durable ingest dirtied one leaf of each per-device index per message:
-- readings(dev, ts), messages(device_id, id) and, for messages with a
-- msg_id (all of the SDK's), messages(device_id, msg_id). The messages of
-- a group commit are all from different devices, so each per-device index
-- costs one WAL page per message. This keeps one per-device index on
-- messages: the msg_id index, now over every message (NULL msg_ids are
-- distinct, so they never conflict). It serves the msg_id dedupe and a
-- device's audit listing, which sorts the device's message ids after the
-- index search: its cost grows with the number of messages of that device
-- (see docs/BENCHMARKS.md, "Round 2: storage layout").

-- +goose Up
DROP INDEX messages_device_id;
DROP INDEX messages_device_msg_id;
CREATE UNIQUE INDEX messages_device_msg_id ON messages (device_id, msg_id);

-- +goose Down
DROP INDEX messages_device_msg_id;
CREATE UNIQUE INDEX messages_device_msg_id ON messages (device_id, msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX messages_device_id ON messages (device_id, id);
