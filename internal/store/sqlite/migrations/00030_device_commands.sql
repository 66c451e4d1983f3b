-- Device commands and device twins (internal/commands, internal/twin).
-- Times are Unix microseconds; JSON is text.

-- +goose Up
-- status: pending (not published yet), sent, succeeded, failed, expired.
CREATE TABLE device_commands (
    id          TEXT    PRIMARY KEY,
    device_id   TEXT    NOT NULL,
    command     TEXT    NOT NULL,
    payload     TEXT,
    status      TEXT    NOT NULL,
    result      TEXT,
    sends       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    sent_at     INTEGER,
    finished_at INTEGER,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX device_commands_device ON device_commands (device_id, created_at, id);
CREATE INDEX device_commands_open ON device_commands (expires_at) WHERE status IN ('pending', 'sent');

-- One row per device with a twin: desired properties with their version,
-- reported properties with a counter of the patches merged into them.
CREATE TABLE device_twins (
    device_id        TEXT    PRIMARY KEY,
    desired          TEXT    NOT NULL DEFAULT '{}',
    desired_version  INTEGER NOT NULL DEFAULT 0,
    desired_at       INTEGER,
    reported         TEXT    NOT NULL DEFAULT '{}',
    reported_version INTEGER NOT NULL DEFAULT 0,
    reported_at      INTEGER
);

-- +goose Down
DROP TABLE device_twins;
DROP TABLE device_commands;
