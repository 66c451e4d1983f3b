-- +goose Up
-- The API audit trail: every change asked of the REST API, allowed or
-- refused. Append-only.
CREATE TABLE api_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL, -- Unix microseconds
    token_id     TEXT    NOT NULL DEFAULT '',
    token_name   TEXT    NOT NULL DEFAULT '',
    role         TEXT    NOT NULL DEFAULT '',
    method       TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    operation_id TEXT    NOT NULL DEFAULT '',
    target       TEXT    NOT NULL DEFAULT '',
    status       INTEGER NOT NULL,
    remote_addr  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX api_audit_token ON api_audit (token_id, id);
CREATE INDEX api_audit_target ON api_audit (target, id);

-- +goose Down
DROP TABLE api_audit;
