-- +goose Up
-- Firmware (internal/firmware): artifacts (the files are in the data
-- directory), rollouts (the operator's spec as JSON), each device's update
-- in a rollout, and the states every update went through. Times are Unix
-- microseconds.
CREATE TABLE firmware_artifacts (
    id         TEXT    PRIMARY KEY,
    version    TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    hardware   TEXT    NOT NULL DEFAULT '',
    size       INTEGER NOT NULL,
    sha256     TEXT    NOT NULL,
    signature  TEXT    NOT NULL,
    public_key TEXT    NOT NULL,
    signed_by  TEXT    NOT NULL,
    filename   TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE TABLE firmware_rollouts (
    id            TEXT    PRIMARY KEY,
    artifact_id   TEXT    NOT NULL REFERENCES firmware_artifacts (id),
    spec          TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    reason        TEXT    NOT NULL DEFAULT '',
    version       TEXT    NOT NULL,
    device_type   TEXT    NOT NULL,
    base_finished INTEGER NOT NULL DEFAULT 0,
    base_failures INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX firmware_rollouts_active ON firmware_rollouts (status) WHERE status NOT IN ('completed', 'canceled');
CREATE TABLE firmware_updates (
    rollout_id   TEXT    NOT NULL REFERENCES firmware_rollouts (id) ON DELETE CASCADE,
    device_id    TEXT    NOT NULL,
    device_type  TEXT    NOT NULL,
    ord          INTEGER NOT NULL,
    phase        INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    attempt      INTEGER NOT NULL,
    message      TEXT    NOT NULL DEFAULT '',
    progress     INTEGER NOT NULL DEFAULT 0,
    state_since  INTEGER NOT NULL,
    started_at   INTEGER,
    reboot_at    INTEGER,
    confirmed_at INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE firmware_update_history (
    id         INTEGER PRIMARY KEY,
    rollout_id TEXT    NOT NULL,
    device_id  TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    message    TEXT    NOT NULL DEFAULT '',
    at         INTEGER NOT NULL
);
CREATE INDEX firmware_update_history_device ON firmware_update_history (device_id, id);

-- +goose Down
DROP TABLE firmware_update_history;
DROP TABLE firmware_updates;
DROP TABLE firmware_rollouts;
DROP TABLE firmware_artifacts;
