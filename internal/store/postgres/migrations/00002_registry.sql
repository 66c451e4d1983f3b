-- The registry: device fields, groups, credential rotation and revocation,
-- pinned client certificates, and self-registration keys.

-- +goose Up
ALTER TABLE devices ADD COLUMN location jsonb;
ALTER TABLE devices ADD COLUMN firmware_version text NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN hardware_version text NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN management_ip text NOT NULL DEFAULT '';
CREATE INDEX devices_grp ON devices (grp, id);

-- prev_*: the credentials a rotation replaced, valid until prev_until.
-- A revoked device has empty hashes and revoked_at set.
ALTER TABLE credentials ADD COLUMN prev_password_hash bytea;
ALTER TABLE credentials ADD COLUMN prev_api_key_hash bytea;
ALTER TABLE credentials ADD COLUMN prev_until timestamptz;
ALTER TABLE credentials ADD COLUMN revoked_at timestamptz;
ALTER TABLE credentials ADD COLUMN cert_fingerprint bytea;

CREATE TABLE device_groups (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- key_hash is the SHA-256 of a device's hardware key (self-registration).
CREATE TABLE registration_keys (
    key_hash   bytea       PRIMARY KEY,
    device_id  text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE registration_keys;
DROP TABLE device_groups;
ALTER TABLE credentials DROP COLUMN cert_fingerprint, DROP COLUMN revoked_at, DROP COLUMN prev_until,
    DROP COLUMN prev_api_key_hash, DROP COLUMN prev_password_hash;
DROP INDEX devices_grp;
ALTER TABLE devices DROP COLUMN management_ip, DROP COLUMN hardware_version, DROP COLUMN firmware_version, DROP COLUMN location;
