-- +goose Up
-- Alerts (internal/alerts).
CREATE TABLE alerts (
    id          text        PRIMARY KEY,
    rule        text        NOT NULL,
    device_id   text        NOT NULL,
    device_type text        NOT NULL,
    severity    text        NOT NULL,
    state       text        NOT NULL,
    message     text        NOT NULL DEFAULT '',
    labels      jsonb,
    value       jsonb,
    count       bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL,
    raised_at   timestamptz,
    last_at     timestamptz NOT NULL,
    ack_at      timestamptz,
    ack_by      text        NOT NULL DEFAULT '',
    ack_note    text        NOT NULL DEFAULT '',
    cleared_at  timestamptz,
    cleared_by  text        NOT NULL DEFAULT '',
    clear_note  text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL
);
-- One open alert per (rule, device): the guarantee, whoever writes.
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, device_id) WHERE state <> 'cleared';
CREATE INDEX alerts_started ON alerts (started_at DESC, id DESC);
CREATE INDEX alerts_device ON alerts (device_id, started_at DESC);
-- The evaluator's position in the event log, written with the alerts.
CREATE TABLE alert_cursor (
    id         integer     PRIMARY KEY CHECK (id = 1),
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
-- Rules created over the API (those of the configuration file are not
-- stored).
CREATE TABLE alert_rules (
    name       text        PRIMARY KEY,
    spec       jsonb       NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL DEFAULT ''
);
CREATE TABLE alert_silences (
    id         text        PRIMARY KEY,
    rule       text        NOT NULL DEFAULT '',
    device_id  text        NOT NULL DEFAULT '',
    until      timestamptz NOT NULL,
    note       text        NOT NULL DEFAULT '',
    created_by text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE alert_silences;
DROP TABLE alert_rules;
DROP TABLE alert_cursor;
DROP TABLE alerts;
