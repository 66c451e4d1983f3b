-- The initial schema. Times are Unix microseconds (UTC); JSON is stored as
-- text so that the json_* functions can read it.

-- +goose Up
-- key is a small integer alias of the device id: the readings index is
-- keyed by it because an integer key makes the per-device index cheaper to
-- maintain than one on the text id (see BenchmarkReadingsLayout).
CREATE TABLE devices (
    key        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    type       TEXT    NOT NULL,
    name       TEXT    NOT NULL DEFAULT '',
    grp        TEXT    NOT NULL DEFAULT '',
    tags       TEXT    NOT NULL DEFAULT '[]',
    metadata   TEXT,
    status     TEXT    NOT NULL DEFAULT 'offline',
    connected  INTEGER NOT NULL DEFAULT 0,
    last_seen  INTEGER,
    metrics    TEXT,
    disabled   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE credentials (
    device_id     TEXT    PRIMARY KEY REFERENCES devices (id),
    mqtt_username TEXT    NOT NULL,
    password_hash BLOB    NOT NULL,
    api_key_hash  BLOB    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- messages is the audit log; device_id is not a foreign key because
-- messages of unknown devices are recorded too.
CREATE TABLE messages (
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
CREATE UNIQUE INDEX messages_device_msg_id ON messages (device_id, msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX messages_device_id ON messages (device_id, id);
CREATE INDEX messages_rejected ON messages (id) WHERE accepted = 0;

-- readings is appended in rowid order; the one index serves a device's
-- newest readings (its entries end with the rowid, so ORDER BY ts DESC,
-- id DESC needs no sort).
CREATE TABLE readings (
    id          INTEGER PRIMARY KEY,
    dev         INTEGER NOT NULL,
    stream      TEXT    NOT NULL DEFAULT '',
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    data        TEXT    NOT NULL
);
CREATE INDEX readings_dev_ts ON readings (dev, ts);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    type        TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    device_id   TEXT    NOT NULL DEFAULT '',
    device_type TEXT    NOT NULL DEFAULT '',
    args        TEXT
);

CREATE TABLE tokens (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    hash       BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- +goose Down
DROP TABLE tokens;
DROP TABLE events;
DROP TABLE readings;
DROP TABLE messages;
DROP TABLE credentials;
DROP TABLE devices;
