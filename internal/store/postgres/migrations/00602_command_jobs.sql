-- Fleet command jobs: one command sent to many devices (internal/commands).
-- The commands themselves are rows of device_commands with this job_id.

-- +goose Up
CREATE TABLE command_jobs (
    id          text        PRIMARY KEY,
    command     text        NOT NULL,
    payload     jsonb,
    expires_in  bigint      NOT NULL,           -- microseconds
    target      jsonb       NOT NULL,           -- device_ids, group, type, tag, online_only
    status      text        NOT NULL,           -- running, done
    targets     integer     NOT NULL DEFAULT 0, -- devices matched so far
    refused     integer     NOT NULL DEFAULT 0, -- matched devices the command could not be sent to
    refusal     text        NOT NULL DEFAULT '',-- the first refusal's reason
    created_at  timestamptz NOT NULL,
    finished_at timestamptz
);

-- +goose Down
DROP TABLE command_jobs;
