-- events becomes a table partitioned by range of seq (events_sNNN, NNN
-- the range's first seq, 19 digits): seq is the cursor every consumer
-- reads after (SSE, monitors, alerts, the cluster's fan-out), so a read
-- after a cursor touches the ranges from the cursor on, in order, and
-- retention drops a whole range once its last event is past the window.
-- The hub makes ranges ahead of the sequence (partitions.go, each range
-- sized to about a day of events); events_default takes any seq no range
-- covers, so an insert never fails for want of a range.
--
-- seq comes from the sequence event_seqs (an identity column of a
-- partitioned table is not supported before PostgreSQL 17); the advisory
-- lock of the commit (eventLockID) still makes seqs visible in order.
--
-- The existing events are copied into one range [1, next seq): it goes
-- whole once its last event is past the window.

-- +goose Up
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER INDEX events_pkey RENAME TO events_unpartitioned_pkey;
ALTER INDEX events_presence RENAME TO events_unpartitioned_presence;

CREATE SEQUENCE event_seqs AS bigint;
SELECT setval('event_seqs', greatest(
    coalesce((SELECT max(seq) FROM events_unpartitioned), 0),
    (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM events_seq_seq)) + 1, false);

CREATE TABLE events (
    seq         bigint      NOT NULL DEFAULT nextval('event_seqs'),
    type        text        NOT NULL,
    time        timestamptz NOT NULL,
    device_id   text        NOT NULL DEFAULT '',
    device_type text        NOT NULL DEFAULT '',
    args        json,
    PRIMARY KEY (seq)
) PARTITION BY RANGE (seq);
ALTER SEQUENCE event_seqs OWNED BY events.seq;
CREATE INDEX events_presence ON events (device_id, seq)
    WHERE type IN ('device_connected', 'device_disconnected', 'device_status_changed');
CREATE TABLE events_default PARTITION OF events DEFAULT;

-- +goose StatementBegin
DO $$
DECLARE
    next bigint;
BEGIN
    SELECT last_value INTO next FROM event_seqs;
    IF next > 1 THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (1) TO (%s)', 'events_s' || lpad('1', 19, '0'), next);
    END IF;
END
$$;
-- +goose StatementEnd

INSERT INTO events (seq, type, time, device_id, device_type, args)
SELECT seq, type, time, device_id, device_type, args FROM events_unpartitioned;
DROP TABLE events_unpartitioned;

-- +goose Down
CREATE TABLE events_unpartitioned (
    seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        text        NOT NULL,
    time        timestamptz NOT NULL,
    device_id   text        NOT NULL DEFAULT '',
    device_type text        NOT NULL DEFAULT '',
    args        json
);
INSERT INTO events_unpartitioned (seq, type, time, device_id, device_type, args) OVERRIDING SYSTEM VALUE
SELECT seq, type, time, device_id, device_type, args FROM events;
SELECT setval(pg_get_serial_sequence('events_unpartitioned', 'seq'), greatest(
    coalesce((SELECT max(seq) FROM events), 0),
    (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_seqs)) + 1, false);
DROP TABLE events;
ALTER TABLE events_unpartitioned RENAME TO events;
ALTER INDEX events_unpartitioned_pkey RENAME TO events_pkey;
ALTER SEQUENCE events_unpartitioned_seq_seq RENAME TO events_seq_seq;
CREATE INDEX events_presence ON events (device_id, seq)
    WHERE type IN ('device_connected', 'device_disconnected', 'device_status_changed');
