-- Readings without a row per reading (docs/WRITE-PATH.md, the build
-- order's second item; readhead.go). A commit writes its batch's readings,
-- of all its devices, as one row of reading_batches (package readbatch):
-- one B-tree entry per batch instead of two per reading (the readings
-- row and its (dev, ts) entry). The store keeps an index of those rows in
-- memory (the head) and moves them, off the commit path, into
-- reading_blocks: the batch rows deleted and the blocks written in one
-- transaction. Reading ids are the store's own from now on (no longer
-- rowids of readings): first_id..last_id are a row's, contiguous and
-- increasing with the commits. reading_state keeps the largest reading id
-- ever stored, so that ids never go back once its row has moved or
-- expired. The readings table stays: rows of an older database are read,
-- compacted and expired as before, and no new row is written.

-- +goose Up
CREATE TABLE reading_batches (
    first_id INTEGER PRIMARY KEY,
    last_id  INTEGER NOT NULL,
    n        INTEGER NOT NULL,
    data     BLOB    NOT NULL
);
CREATE TABLE reading_state (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- +goose Down
DROP TABLE reading_state;
DROP TABLE reading_batches;
