-- A compaction of the message log (msglog_compact.go) writes its blocks
-- and, in its last transaction, one row here listing the batch rows those
-- blocks replace (their first_ids, ascending, as delta uvarints) instead
-- of deleting them there: deleting a chunk's thousands of small batch
-- rows doubled the transaction that every commit waits for. Later short
-- transactions delete the listed rows and then the list; the next open
-- deletes what a stop left listed. A listed batch row is no longer in the
-- head and is never read.

-- +goose Up
CREATE TABLE message_batches_dead (
    id     INTEGER PRIMARY KEY,
    firsts BLOB NOT NULL
);

-- +goose Down
DROP TABLE message_batches_dead;
