-- Staging tables for the newest messages and readings. Commit appends to
-- them (no per-device index: a batch of messages from many devices fills
-- a few table pages instead of one index leaf per device and index), and
-- the store folds them into messages and readings every few thousand
-- messages, in one transaction, where one index leaf then takes many rows
-- of its device. Queries read both. Ids are assigned by the writer and
-- kept by the fold.

-- +goose Up
CREATE TABLE messages_recent (
    id          INTEGER PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    transport   TEXT    NOT NULL,
    qos         INTEGER NOT NULL,
    payload     BLOB,
    msg_id      TEXT,
    accepted    INTEGER NOT NULL,
    code        TEXT    NOT NULL DEFAULT '',
    reason      TEXT    NOT NULL DEFAULT '',
    received_at INTEGER NOT NULL
);
CREATE TABLE readings_recent (
    id          INTEGER PRIMARY KEY,
    dev         INTEGER NOT NULL,
    stream      TEXT    NOT NULL DEFAULT '',
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    data        TEXT    NOT NULL
);

-- +goose Down
INSERT INTO messages SELECT * FROM messages_recent;
INSERT INTO readings SELECT * FROM readings_recent;
DROP TABLE readings_recent;
DROP TABLE messages_recent;
