-- The message log's payloads move to message_payloads, partitioned by UTC
-- day of received_at like messages (00720), so that the payload window
-- (retention's message_payloads) drops whole days of payloads while the
-- records' metadata stays for the longer messages window: an UPDATE
-- payload = NULL rewrote every expiring row and left them to vacuum.
-- A message without a payload (NULL before) has no row here; an empty
-- payload has an empty one.
--
-- Partitions are made for the days messages has, the rest goes to the
-- default; the hub waits for the copy at start. Dropping the column is
-- a change of the catalog only.

-- +goose Up
CREATE TABLE message_payloads (
    id          bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    payload     bytea       NOT NULL,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE TABLE message_payloads_default PARTITION OF message_payloads DEFAULT;

-- +goose StatementBegin
DO $$
DECLARE
    part text;
BEGIN
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'messages'::regclass AND c.relname ~ '^messages_p[0-9]{8}$'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF message_payloads FOR VALUES FROM (%L) TO (%L)',
            'message_payloads_p' || substr(part, 11),
            to_date(substr(part, 11), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC',
            (to_date(substr(part, 11), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END
$$;
-- +goose StatementEnd

INSERT INTO message_payloads (id, received_at, payload)
SELECT id, received_at, payload FROM messages WHERE payload IS NOT NULL;
ALTER TABLE messages DROP COLUMN payload;

-- +goose Down
ALTER TABLE messages ADD COLUMN payload bytea;
UPDATE messages m SET payload = p.payload FROM message_payloads p WHERE p.id = m.id AND p.received_at = m.received_at;
DROP TABLE message_payloads;
