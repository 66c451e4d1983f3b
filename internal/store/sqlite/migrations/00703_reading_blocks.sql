-- reading_blocks holds readings compacted into compressed blocks (package
-- blocks): each row is up to a few hundred readings of one device and
-- stream, t0..t1 their first and last time, n their count. The compactor
-- (retention.Compactor) moves readings older than a window from readings
-- into blocks, deleting the rows in the same transaction; queries read
-- both. A rowid table: a block is ~1 KB, too wide for a WITHOUT ROWID
-- B-tree's cells. (dev, t1) finds a device's blocks newest first, or
-- those that end after a time.

-- +goose Up
CREATE TABLE reading_blocks (
    id     INTEGER PRIMARY KEY,
    dev    INTEGER NOT NULL,
    stream TEXT    NOT NULL,
    t0     INTEGER NOT NULL,
    t1     INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    data   BLOB    NOT NULL
);
CREATE INDEX reading_blocks_dev_t1 ON reading_blocks (dev, t1);

-- +goose Down
DROP TABLE reading_blocks;
