-- The initial schema.

-- +goose Up
CREATE TABLE devices (
    id         text        PRIMARY KEY,
    type       text        NOT NULL,
    name       text        NOT NULL DEFAULT '',
    grp        text        NOT NULL DEFAULT '',
    tags       jsonb       NOT NULL DEFAULT '[]',
    metadata   jsonb,
    status     text        NOT NULL DEFAULT 'offline',
    connected  boolean     NOT NULL DEFAULT false,
    last_seen  timestamptz,
    metrics    jsonb,
    disabled   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE credentials (
    device_id     text        PRIMARY KEY REFERENCES devices (id),
    mqtt_username text        NOT NULL,
    password_hash bytea       NOT NULL,
    api_key_hash  bytea       NOT NULL,
    created_at    timestamptz NOT NULL
);

-- messages is the audit log; device_id is not a foreign key because
-- messages of unknown devices are recorded too.
CREATE TABLE messages (
    id          bigint      PRIMARY KEY,
    device_id   text        NOT NULL,
    topic       text        NOT NULL,
    transport   text        NOT NULL,
    qos         smallint    NOT NULL,
    payload     bytea,
    msg_id      text,
    accepted    boolean     NOT NULL,
    code        text        NOT NULL DEFAULT '',
    reason      text        NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX messages_device_msg_id ON messages (device_id, msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX messages_device_id ON messages (device_id, id);
CREATE INDEX messages_rejected ON messages (id) WHERE NOT accepted;

CREATE TABLE readings (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text        NOT NULL,
    stream      text        NOT NULL DEFAULT '',
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    message_id  bigint      NOT NULL,
    data        jsonb       NOT NULL
);
CREATE INDEX readings_device_ts ON readings (device_id, ts, id);

-- args is json, not jsonb: the bytes are kept as the hub encoded them.
CREATE TABLE events (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        text        NOT NULL,
    time        timestamptz NOT NULL,
    device_id   text        NOT NULL DEFAULT '',
    device_type text        NOT NULL DEFAULT '',
    args        json
);

CREATE TABLE tokens (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL,
    hash       bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- +goose Down
DROP TABLE tokens;
DROP TABLE events;
DROP TABLE readings;
DROP TABLE messages;
DROP TABLE credentials;
DROP TABLE devices;
