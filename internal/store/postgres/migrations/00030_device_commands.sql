-- Device commands and device twins (internal/commands, internal/twin).

-- +goose Up
-- status: pending (not published yet), sent, succeeded, failed, expired.
CREATE TABLE device_commands (
    id          text        PRIMARY KEY,
    device_id   text        NOT NULL,
    command     text        NOT NULL,
    payload     jsonb,
    status      text        NOT NULL,
    result      jsonb,
    sends       integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    sent_at     timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX device_commands_device ON device_commands (device_id, created_at, id);
CREATE INDEX device_commands_open ON device_commands (expires_at) WHERE status IN ('pending', 'sent');

-- One row per device with a twin: desired properties with their version,
-- reported properties with a counter of the patches merged into them.
CREATE TABLE device_twins (
    device_id        text        PRIMARY KEY,
    desired          jsonb       NOT NULL DEFAULT '{}',
    desired_version  bigint      NOT NULL DEFAULT 0,
    desired_at       timestamptz,
    reported         jsonb       NOT NULL DEFAULT '{}',
    reported_version bigint      NOT NULL DEFAULT 0,
    reported_at      timestamptz
);

-- +goose Down
DROP TABLE device_twins;
DROP TABLE device_commands;
