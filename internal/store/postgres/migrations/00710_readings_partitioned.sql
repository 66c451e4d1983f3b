-- readings becomes a table partitioned by range of ts, one partition per
-- UTC day (readings_pYYYYMMDD): retention drops whole days instead of
-- deleting rows, and a query for a device's time range reads only the
-- partitions of that range. ts, the reading's own time, is the key
-- because it is what the queries and retention select on.
-- readings_default takes the rows no partition covers (a device clock far
-- in the past or future), so that ingest never fails for want of a
-- partition; the hub creates the coming days' partitions ahead of time
-- and moves any of their rows out of the default (partitions.go).
--
-- A unique key of a partitioned table must include the partition key, so
-- the primary key is (device_id, ts, id), the index the queries walk.
-- Ids still come from one sequence: unique and increasing, as the API's
-- cursors and the rollup cursor need. readings_id serves the rollups'
-- walk by id.
--
-- The existing rows are copied in this migration (the hub waits for it at
-- start): each day that has rows within five years before and a week
-- after now gets its partition, the rest goes to the default.

-- +goose Up
ALTER TABLE readings RENAME TO readings_unpartitioned;
ALTER INDEX readings_device_ts RENAME TO readings_unpartitioned_device_ts;
ALTER INDEX readings_pkey RENAME TO readings_unpartitioned_pkey;

CREATE SEQUENCE reading_ids AS bigint;
SELECT setval('reading_ids', coalesce((SELECT max(id) FROM readings_unpartitioned), 0) + 1, false);

CREATE TABLE readings (
    id          bigint      NOT NULL DEFAULT nextval('reading_ids'),
    device_id   text        NOT NULL,
    stream      text        NOT NULL DEFAULT '',
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    message_id  bigint      NOT NULL,
    data        jsonb       NOT NULL,
    PRIMARY KEY (device_id, ts, id)
) PARTITION BY RANGE (ts);
ALTER SEQUENCE reading_ids OWNED BY readings.id;
CREATE INDEX readings_id ON readings (id);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- +goose StatementBegin
DO $$
DECLARE
    d timestamp;
BEGIN
    FOR d IN SELECT DISTINCT date_trunc('day', ts AT TIME ZONE 'UTC') FROM readings_unpartitioned
        WHERE ts >= now() - interval '5 years' AND ts < now() + interval '7 days'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
            'readings_p' || to_char(d, 'YYYYMMDD'), d AT TIME ZONE 'UTC', (d + interval '1 day') AT TIME ZONE 'UTC');
    END LOOP;
END
$$;
-- +goose StatementEnd

INSERT INTO readings (id, device_id, stream, ts, received_at, message_id, data)
SELECT id, device_id, stream, ts, received_at, message_id, data FROM readings_unpartitioned;
DROP TABLE readings_unpartitioned;

-- +goose Down
CREATE TABLE readings_unpartitioned (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text        NOT NULL,
    stream      text        NOT NULL DEFAULT '',
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    message_id  bigint      NOT NULL,
    data        jsonb       NOT NULL
);
INSERT INTO readings_unpartitioned (id, device_id, stream, ts, received_at, message_id, data) OVERRIDING SYSTEM VALUE
SELECT id, device_id, stream, ts, received_at, message_id, data FROM readings;
SELECT setval(pg_get_serial_sequence('readings_unpartitioned', 'id'), coalesce((SELECT max(id) FROM readings), 0) + 1, false);
DROP TABLE readings;
ALTER TABLE readings_unpartitioned RENAME TO readings;
ALTER INDEX readings_unpartitioned_pkey RENAME TO readings_pkey;
CREATE INDEX readings_device_ts ON readings (device_id, ts, id);
