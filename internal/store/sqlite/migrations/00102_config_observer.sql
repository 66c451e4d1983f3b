-- How far configuration management has followed the event log (the Seq of
-- the last event it handled), so that after a restart it handles the
-- events committed before the stop that it had not handled yet (a device
-- created just before a crash still gets its default templates).

-- +goose Up
CREATE TABLE config_observer (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);

-- +goose Down
DROP TABLE config_observer;
