-- The message log without a row per message (docs/WRITE-PATH.md, the
-- plan's first step; msglog.go). A commit writes its batch's messages,
-- of all its devices, as one row of message_batches: one B-tree entry per
-- batch instead of three per message (rowid, (device_id, msg_id),
-- (device_id, id)). The store keeps an index of those rows in memory (the
-- head) and moves them, off the commit path, into message_blocks: per
-- device runs of messages, written and the batch rows deleted in one
-- transaction. data is a msgblock block in both.
--
-- first_id..last_id: the smallest and largest message id of the row (the
-- ids of different rows may interleave); n, rejected: its messages, and
-- how many of them were rejected; max_received: its newest message's
-- receive time (whole-row expiry); payload_from: the oldest receive time
-- among its messages that still carry a payload, NULL when none does
-- (payload retention rewrites only the rows it has something to strip in).
--
-- message_blocks has per-block index entries only: by device and last_id
-- (a device's listing, newest first), by last_id (all devices), the
-- blocks holding rejected messages by last_id and by device and last_id,
-- by max_received (expiry) and payload_from.
-- message_log_state keeps the largest message id ever stored, so that ids
-- never go back once every row has expired.

-- +goose Up
CREATE TABLE message_batches (
    first_id     INTEGER PRIMARY KEY,
    last_id      INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    max_received INTEGER NOT NULL,
    payload_from INTEGER,
    data         BLOB    NOT NULL
);
CREATE TABLE message_blocks (
    id           INTEGER PRIMARY KEY,
    device_id    TEXT    NOT NULL,
    first_id     INTEGER NOT NULL,
    last_id      INTEGER NOT NULL,
    n            INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    max_received INTEGER NOT NULL,
    payload_from INTEGER,
    data         BLOB    NOT NULL
);
CREATE INDEX message_blocks_device ON message_blocks (device_id, last_id, first_id);
CREATE INDEX message_blocks_last ON message_blocks (last_id, first_id);
CREATE INDEX message_blocks_rejected ON message_blocks (last_id, first_id) WHERE rejected > 0;
CREATE INDEX message_blocks_device_rejected ON message_blocks (device_id, last_id, first_id) WHERE rejected > 0;
CREATE INDEX message_blocks_expiry ON message_blocks (max_received);
CREATE INDEX message_blocks_payloads ON message_blocks (payload_from) WHERE payload_from IS NOT NULL;
CREATE TABLE message_log_state (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- +goose Down
DROP TABLE message_log_state;
DROP TABLE message_blocks;
DROP TABLE message_batches;
