-- +goose Up
-- Push monitors (internal/monitors): the definition as JSON (spec), the
-- state the service keeps, and the signing secrets and stream token hash.
CREATE TABLE monitors (
    id                text        PRIMARY KEY,
    spec              jsonb       NOT NULL,
    status            text        NOT NULL,
    status_reason     text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    last_connect      timestamptz,
    last_sent         timestamptz,
    failing_since     timestamptz,
    secret            text        NOT NULL DEFAULT '',
    prev_secret       text        NOT NULL DEFAULT '',
    prev_secret_until timestamptz,
    token_hash        bytea
);
-- A monitor's cursor: the Seq of the last event acknowledged. Apart from
-- the definition because it is written at every acknowledgement.
CREATE TABLE monitor_cursors (
    monitor_id text        PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE monitor_cursors;
DROP TABLE monitors;
