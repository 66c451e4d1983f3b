-- +goose Up
-- The dashboard's operator accounts and their sessions (internal/accounts).
CREATE TABLE operator_users (
    name          text        PRIMARY KEY,
    role          text        NOT NULL,
    password_hash text        NOT NULL, -- argon2id, PHC string
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE TABLE operator_sessions (
    hash        bytea       PRIMARY KEY, -- SHA-256 of the cookie's secret
    user_name   text        NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    remote_addr text        NOT NULL DEFAULT ''
);
CREATE INDEX operator_sessions_user ON operator_sessions (user_name);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

-- +goose Down
DROP TABLE operator_sessions;
DROP TABLE operator_users;
