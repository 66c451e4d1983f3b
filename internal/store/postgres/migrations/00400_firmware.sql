-- +goose Up
-- Firmware (internal/firmware): artifacts (the files are in the data
-- directory, or a directory shared by the nodes), rollouts (the operator's
-- spec as JSON), each device's update in a rollout, and the states every
-- update went through.
CREATE TABLE firmware_artifacts (
    id         text        PRIMARY KEY,
    version    text        NOT NULL,
    type       text        NOT NULL,
    hardware   text        NOT NULL DEFAULT '',
    size       bigint      NOT NULL,
    sha256     text        NOT NULL,
    signature  text        NOT NULL,
    public_key text        NOT NULL,
    signed_by  text        NOT NULL,
    filename   text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);
CREATE TABLE firmware_rollouts (
    id            text        PRIMARY KEY,
    artifact_id   text        NOT NULL REFERENCES firmware_artifacts (id),
    spec          jsonb       NOT NULL,
    status        text        NOT NULL,
    reason        text        NOT NULL DEFAULT '',
    version       text        NOT NULL,
    device_type   text        NOT NULL,
    base_finished integer     NOT NULL DEFAULT 0,
    base_failures integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX firmware_rollouts_active ON firmware_rollouts (status) WHERE status NOT IN ('completed', 'canceled');
CREATE TABLE firmware_updates (
    rollout_id   text        NOT NULL REFERENCES firmware_rollouts (id) ON DELETE CASCADE,
    device_id    text        NOT NULL,
    device_type  text        NOT NULL,
    ord          integer     NOT NULL,
    phase        integer     NOT NULL,
    state        text        NOT NULL,
    attempt      integer     NOT NULL,
    message      text        NOT NULL DEFAULT '',
    progress     integer     NOT NULL DEFAULT 0,
    state_since  timestamptz NOT NULL,
    started_at   timestamptz,
    reboot_at    timestamptz,
    confirmed_at timestamptz,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
CREATE TABLE firmware_update_history (
    id         bigserial   PRIMARY KEY,
    rollout_id text        NOT NULL,
    device_id  text        NOT NULL,
    state      text        NOT NULL,
    attempt    integer     NOT NULL,
    message    text        NOT NULL DEFAULT '',
    at         timestamptz NOT NULL
);
CREATE INDEX firmware_update_history_device ON firmware_update_history (device_id, id);

-- +goose Down
DROP TABLE firmware_update_history;
DROP TABLE firmware_updates;
DROP TABLE firmware_rollouts;
DROP TABLE firmware_artifacts;
