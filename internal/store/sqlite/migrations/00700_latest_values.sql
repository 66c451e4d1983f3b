-- latest_values keeps the newest value of every field of every device
-- (per stream), updated in the commit that stores the reading, so that the
-- latest values of a whole fleet are one scan of a table the size of the
-- fleet, whatever the length of the history. Without rowid: the rows of a
-- device are together in the primary key's B-tree.

-- +goose Up
CREATE TABLE latest_values (
    dev    INTEGER NOT NULL,
    stream TEXT    NOT NULL,
    field  TEXT    NOT NULL,
    ts     INTEGER NOT NULL,
    value  TEXT    NOT NULL,
    PRIMARY KEY (dev, stream, field)
) WITHOUT ROWID;

-- The readings stored before this migration.
INSERT INTO latest_values (dev, stream, field, ts, value)
SELECT dev, stream, key, ts, value FROM (
    SELECT r.dev, r.stream, j.key, r.ts,
        CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null'
            WHEN 'object' THEN j.value WHEN 'array' THEN j.value ELSE json_quote(j.value) END AS value,
        row_number() OVER (PARTITION BY r.dev, r.stream, j.key ORDER BY r.ts DESC, r.id DESC) AS n
    FROM readings r, json_each(r.data) j
) WHERE n = 1;

-- +goose Down
DROP TABLE latest_values;
