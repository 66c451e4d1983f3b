-- +goose Up
-- The API audit trail: every change asked of the REST API, allowed or
-- refused. Append-only.
CREATE TABLE api_audit (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL,
    token_id     text        NOT NULL DEFAULT '',
    token_name   text        NOT NULL DEFAULT '',
    role         text        NOT NULL DEFAULT '',
    method       text        NOT NULL,
    path         text        NOT NULL,
    operation_id text        NOT NULL DEFAULT '',
    target       text        NOT NULL DEFAULT '',
    status       integer     NOT NULL,
    remote_addr  text        NOT NULL DEFAULT ''
);
CREATE INDEX api_audit_token ON api_audit (token_id, id);
CREATE INDEX api_audit_target ON api_audit (target, id);

-- +goose Down
DROP TABLE api_audit;
