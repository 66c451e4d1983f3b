-- Provisioning tokens and operations (seed 004).

-- +goose Up
-- hash is the SHA-256 of the token's secret; max_uses 0 is unlimited.
CREATE TABLE provisioning_tokens (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL DEFAULT '',
    hash         BLOB    NOT NULL UNIQUE,
    device_type  TEXT    NOT NULL,
    grp          TEXT    NOT NULL DEFAULT '',
    tags         TEXT    NOT NULL DEFAULT '[]',
    expires_at   INTEGER NOT NULL,
    max_uses     INTEGER NOT NULL DEFAULT 0,
    uses         INTEGER NOT NULL DEFAULT 0,
    auto_approve INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

-- secret_hash is the SHA-256 of the secret the device polls with;
-- public_key receives the sealed credentials (sealed) at approval, which
-- are deleted once delivered.
CREATE TABLE provisioning_operations (
    id                  TEXT    PRIMARY KEY,
    token_id            TEXT    NOT NULL REFERENCES provisioning_tokens (id),
    verification_code   TEXT    NOT NULL,
    secret_hash         BLOB    NOT NULL,
    public_key          BLOB    NOT NULL,
    requested_device_id TEXT    NOT NULL DEFAULT '',
    device_id           TEXT    NOT NULL DEFAULT '',
    device_type         TEXT    NOT NULL,
    grp                 TEXT    NOT NULL DEFAULT '',
    tags                TEXT    NOT NULL DEFAULT '[]',
    status              TEXT    NOT NULL,
    reason              TEXT    NOT NULL DEFAULT '',
    sealed              BLOB,
    remote_addr         TEXT    NOT NULL DEFAULT '',
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL,
    claimed_at          INTEGER,
    decided_at          INTEGER
);
CREATE INDEX provisioning_operations_status ON provisioning_operations (status, created_at);

-- +goose Down
DROP TABLE provisioning_operations;
DROP TABLE provisioning_tokens;
