-- rollups sum up readings' numeric fields per 1-minute (res 60) and
-- 1-hour (res 3600) bucket, kept longer than the raw readings. Without
-- rowid, keyed so that a device's buckets of one resolution are together
-- in time order: a time range (a chart, or expiry) is one range of the
-- key. rollup_cursor is the id of the last reading summed up, moved in
-- the transaction that adds its sums.

-- +goose Up
CREATE TABLE rollups (
    dev     INTEGER NOT NULL,
    res     INTEGER NOT NULL,
    bucket  INTEGER NOT NULL,
    stream  TEXT    NOT NULL,
    field   TEXT    NOT NULL,
    n       INTEGER NOT NULL,
    sum     REAL    NOT NULL,
    min     REAL    NOT NULL,
    max     REAL    NOT NULL,
    last    REAL    NOT NULL,
    last_ts INTEGER NOT NULL,
    PRIMARY KEY (dev, res, bucket, stream, field)
) WITHOUT ROWID;

CREATE TABLE rollup_cursor (
    name    TEXT    PRIMARY KEY,
    last_id INTEGER NOT NULL
);

-- +goose Down
DROP TABLE rollup_cursor;
DROP TABLE rollups;
