-- Fleet command jobs: one command sent to many devices (internal/commands).
-- The commands themselves are rows of device_commands with this job_id.

-- +goose Up
CREATE TABLE command_jobs (
    id          TEXT    PRIMARY KEY,
    command     TEXT    NOT NULL,
    payload     TEXT,
    expires_in  INTEGER NOT NULL,           -- microseconds
    target      TEXT    NOT NULL,           -- JSON: device_ids, group, type, tag, online_only
    status      TEXT    NOT NULL,           -- running, done
    targets     INTEGER NOT NULL DEFAULT 0, -- devices matched so far
    refused     INTEGER NOT NULL DEFAULT 0, -- matched devices the command could not be sent to
    refusal     TEXT    NOT NULL DEFAULT '',-- the first refusal's reason
    created_at  INTEGER NOT NULL,
    finished_at INTEGER
);

-- +goose Down
DROP TABLE command_jobs;
