-- latest_values keeps the newest value of every field of every device
-- (per stream), updated in the commit that stores the reading, so that the
-- latest values of a whole fleet are one scan of a table the size of the
-- fleet, whatever the length of the history.

-- +goose Up
CREATE TABLE latest_values (
    device_id text        NOT NULL,
    stream    text        NOT NULL,
    field     text        NOT NULL,
    ts        timestamptz NOT NULL,
    value     jsonb       NOT NULL,
    PRIMARY KEY (device_id, stream, field)
);

-- The readings stored before this migration.
INSERT INTO latest_values (device_id, stream, field, ts, value)
SELECT DISTINCT ON (r.device_id, r.stream, j.key) r.device_id, r.stream, j.key, r.ts, j.value
FROM readings r, jsonb_each(r.data) j
ORDER BY r.device_id, r.stream, j.key, r.ts DESC, r.id DESC;

-- +goose Down
DROP TABLE latest_values;
