-- +goose Up
-- Alerts (internal/alerts). Times are Unix microseconds; labels and value
-- are JSON text.
CREATE TABLE alerts (
    id          TEXT    PRIMARY KEY,
    rule        TEXT    NOT NULL,
    device_id   TEXT    NOT NULL,
    device_type TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    message     TEXT    NOT NULL DEFAULT '',
    labels      TEXT,
    value       TEXT,
    count       INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL,
    raised_at   INTEGER,
    last_at     INTEGER NOT NULL,
    ack_at      INTEGER,
    ack_by      TEXT    NOT NULL DEFAULT '',
    ack_note    TEXT    NOT NULL DEFAULT '',
    cleared_at  INTEGER,
    cleared_by  TEXT    NOT NULL DEFAULT '',
    clear_note  TEXT    NOT NULL DEFAULT '',
    updated_at  INTEGER NOT NULL
);
-- One open alert per (rule, device): the guarantee, whoever writes.
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, device_id) WHERE state <> 'cleared';
CREATE INDEX alerts_started ON alerts (started_at DESC, id DESC);
CREATE INDEX alerts_device ON alerts (device_id, started_at DESC);
-- The evaluator's position in the event log, written with the alerts.
CREATE TABLE alert_cursor (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Rules created over the API (those of the configuration file are not
-- stored).
CREATE TABLE alert_rules (
    name       TEXT    PRIMARY KEY,
    spec       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE alert_silences (
    id         TEXT    PRIMARY KEY,
    rule       TEXT    NOT NULL DEFAULT '',
    device_id  TEXT    NOT NULL DEFAULT '',
    until      INTEGER NOT NULL,
    note       TEXT    NOT NULL DEFAULT '',
    created_by TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE alert_silences;
DROP TABLE alert_rules;
DROP TABLE alert_cursor;
DROP TABLE alerts;
