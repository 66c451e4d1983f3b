-- +goose Up
-- Push monitors (internal/monitors): the definition as JSON (spec), the
-- state the service keeps, and the signing secrets and stream token hash.
-- Times are Unix microseconds.
CREATE TABLE monitors (
    id                TEXT    PRIMARY KEY,
    spec              TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    status_reason     TEXT    NOT NULL DEFAULT '',
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    last_connect      INTEGER,
    last_sent         INTEGER,
    failing_since     INTEGER,
    secret            TEXT    NOT NULL DEFAULT '',
    prev_secret       TEXT    NOT NULL DEFAULT '',
    prev_secret_until INTEGER,
    token_hash        BLOB
);
-- A monitor's cursor: the Seq of the last event acknowledged. Apart from
-- the definition because it is written at every acknowledgement.
CREATE TABLE monitor_cursors (
    monitor_id TEXT    PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE monitor_cursors;
DROP TABLE monitors;
