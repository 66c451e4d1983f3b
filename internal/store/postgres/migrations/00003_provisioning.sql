-- Provisioning tokens and operations (seed 004).

-- +goose Up
-- hash is the SHA-256 of the token's secret; max_uses 0 is unlimited.
CREATE TABLE provisioning_tokens (
    id           text        PRIMARY KEY,
    name         text        NOT NULL DEFAULT '',
    hash         bytea       NOT NULL UNIQUE,
    device_type  text        NOT NULL,
    grp          text        NOT NULL DEFAULT '',
    tags         jsonb       NOT NULL DEFAULT '[]',
    expires_at   timestamptz NOT NULL,
    max_uses     integer     NOT NULL DEFAULT 0,
    uses         integer     NOT NULL DEFAULT 0,
    auto_approve boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

-- secret_hash is the SHA-256 of the secret the device polls with;
-- public_key receives the sealed credentials (sealed) at approval, which
-- are deleted once delivered.
CREATE TABLE provisioning_operations (
    id                  text        PRIMARY KEY,
    token_id            text        NOT NULL REFERENCES provisioning_tokens (id),
    verification_code   text        NOT NULL,
    secret_hash         bytea       NOT NULL,
    public_key          bytea       NOT NULL,
    requested_device_id text        NOT NULL DEFAULT '',
    device_id           text        NOT NULL DEFAULT '',
    device_type         text        NOT NULL,
    grp                 text        NOT NULL DEFAULT '',
    tags                jsonb       NOT NULL DEFAULT '[]',
    status              text        NOT NULL,
    reason              text        NOT NULL DEFAULT '',
    sealed              bytea,
    remote_addr         text        NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL,
    expires_at          timestamptz NOT NULL,
    claimed_at          timestamptz,
    decided_at          timestamptz
);
CREATE INDEX provisioning_operations_status ON provisioning_operations (status, created_at);

-- +goose Down
DROP TABLE provisioning_operations;
DROP TABLE provisioning_tokens;
