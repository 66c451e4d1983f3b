-- +goose Up
-- The dashboard's operator accounts and their sessions (internal/accounts).
CREATE TABLE operator_users (
    name          TEXT    PRIMARY KEY,
    role          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL, -- argon2id, PHC string
    created_at    INTEGER NOT NULL, -- Unix microseconds
    updated_at    INTEGER NOT NULL
);
CREATE TABLE operator_sessions (
    hash        BLOB    PRIMARY KEY, -- SHA-256 of the cookie's secret
    user_name   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    remote_addr TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX operator_sessions_user ON operator_sessions (user_name);
CREATE INDEX operator_sessions_expiry ON operator_sessions (expires_at);

-- +goose Down
DROP TABLE operator_sessions;
DROP TABLE operator_users;
