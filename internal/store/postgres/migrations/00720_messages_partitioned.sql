-- messages (the message audit log) becomes a table partitioned by range
-- of received_at, one partition per UTC day (messages_pYYYYMMDD), like
-- readings (00710): retention drops whole days instead of deleting rows.
-- received_at, the hub's own clock, is the key: it is what expiry
-- selects on, and it never lies far in the past or future, so
-- messages_default only takes the rows of days whose partition is not
-- made yet.
--
-- A unique key of a partitioned table must include the partition key, so
-- the msg_id idempotence (the unique (device_id, msg_id)) moves to
-- message_ids, unpartitioned, written in the commit's statement before
-- the message (a message is new when its message_ids row was inserted).
-- Its entries are deleted once their record's day is dropped (or their
-- record deleted), so a duplicate is recognised at least as long as its
-- original record is kept. The BRIN index on received_at finds the
-- expired entries for nearly nothing at insert (entries are appended in
-- received order).
--
-- The existing rows are copied here (the hub waits for it at start):
-- each day with rows within five years before and a week after now gets
-- its partition, the rest goes to the default.

-- +goose Up
ALTER TABLE messages RENAME TO messages_unpartitioned;
ALTER INDEX messages_pkey RENAME TO messages_unpartitioned_pkey;
ALTER INDEX messages_device_msg_id RENAME TO messages_unpartitioned_device_msg_id;
ALTER INDEX messages_device_id RENAME TO messages_unpartitioned_device_id;
ALTER INDEX messages_rejected RENAME TO messages_unpartitioned_rejected;

CREATE TABLE message_ids (
    device_id   text        NOT NULL,
    msg_id      text        NOT NULL,
    id          bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (device_id, msg_id)
);
CREATE INDEX message_ids_received_at ON message_ids USING brin (received_at);

CREATE TABLE messages (
    id          bigint      NOT NULL,
    device_id   text        NOT NULL,
    topic       text        NOT NULL,
    transport   text        NOT NULL,
    qos         smallint    NOT NULL,
    payload     bytea,
    msg_id      text,
    accepted    boolean     NOT NULL,
    code        text        NOT NULL DEFAULT '',
    reason      text        NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX messages_device_id ON messages (device_id, id);
CREATE INDEX messages_rejected ON messages (id) WHERE NOT accepted;
CREATE TABLE messages_default PARTITION OF messages DEFAULT;

-- +goose StatementBegin
DO $$
DECLARE
    d timestamp;
BEGIN
    FOR d IN SELECT DISTINCT date_trunc('day', received_at AT TIME ZONE 'UTC') FROM messages_unpartitioned
        WHERE received_at >= now() - interval '5 years' AND received_at < now() + interval '7 days'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
            'messages_p' || to_char(d, 'YYYYMMDD'), d AT TIME ZONE 'UTC', (d + interval '1 day') AT TIME ZONE 'UTC');
    END LOOP;
END
$$;
-- +goose StatementEnd

INSERT INTO messages (id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at)
SELECT id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at FROM messages_unpartitioned;
INSERT INTO message_ids (device_id, msg_id, id, received_at)
SELECT device_id, msg_id, id, received_at FROM messages_unpartitioned WHERE msg_id IS NOT NULL ORDER BY id;
DROP TABLE messages_unpartitioned;

-- +goose Down
CREATE TABLE messages_unpartitioned (
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
INSERT INTO messages_unpartitioned (id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at)
SELECT id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at FROM messages;
DROP TABLE messages;
DROP TABLE message_ids;
ALTER TABLE messages_unpartitioned RENAME TO messages;
ALTER INDEX messages_unpartitioned_pkey RENAME TO messages_pkey;
CREATE UNIQUE INDEX messages_device_msg_id ON messages (device_id, msg_id) WHERE msg_id IS NOT NULL;
CREATE INDEX messages_device_id ON messages (device_id, id);
CREATE INDEX messages_rejected ON messages (id) WHERE NOT accepted;
