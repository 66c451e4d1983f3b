-- Cluster mode: how far the node running the rollout scheduler followed
-- the event log (the Seq of the last firmware_status_reported it applied,
-- stored in the same transaction as what the report changed), so that the
-- node taking the scheduler over applies every report after it, once.

-- +goose Up
CREATE TABLE firmware_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);

-- +goose Down
DROP TABLE firmware_cursor;
