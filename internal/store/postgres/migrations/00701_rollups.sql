-- rollups sum up readings' numeric fields per 1-minute (res 60) and
-- 1-hour (res 3600) bucket, kept longer than the raw readings, keyed so
-- that a device's buckets of one resolution are in time order.
-- rollup_cursor is the id of the last reading summed up, moved in the
-- transaction that adds its sums.

-- +goose Up
CREATE TABLE rollups (
    device_id text             NOT NULL,
    res       integer          NOT NULL,
    bucket    timestamptz      NOT NULL,
    stream    text             NOT NULL,
    field     text             NOT NULL,
    n         bigint           NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    last      double precision NOT NULL,
    last_ts   timestamptz      NOT NULL,
    PRIMARY KEY (device_id, res, bucket, stream, field)
);

CREATE TABLE rollup_cursor (
    name    text   PRIMARY KEY,
    last_id bigint NOT NULL
);

-- +goose Down
DROP TABLE rollup_cursor;
DROP TABLE rollups;
