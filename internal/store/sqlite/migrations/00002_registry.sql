-- The registry: device fields, groups, credential rotation and revocation,
-- pinned client certificates, and self-registration keys.

-- +goose Up
ALTER TABLE devices ADD COLUMN location TEXT;
ALTER TABLE devices ADD COLUMN firmware_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN hardware_version TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN management_ip TEXT NOT NULL DEFAULT '';
CREATE INDEX devices_grp ON devices (grp, id);

-- prev_*: the credentials a rotation replaced, valid until prev_until.
-- A revoked device has empty hashes and revoked_at set.
ALTER TABLE credentials ADD COLUMN prev_password_hash BLOB;
ALTER TABLE credentials ADD COLUMN prev_api_key_hash BLOB;
ALTER TABLE credentials ADD COLUMN prev_until INTEGER;
ALTER TABLE credentials ADD COLUMN revoked_at INTEGER;
ALTER TABLE credentials ADD COLUMN cert_fingerprint BLOB;

CREATE TABLE device_groups (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- key_hash is the SHA-256 of a device's hardware key (self-registration).
CREATE TABLE registration_keys (
    key_hash   BLOB    PRIMARY KEY,
    device_id  TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE registration_keys;
DROP TABLE device_groups;
ALTER TABLE credentials DROP COLUMN cert_fingerprint;
ALTER TABLE credentials DROP COLUMN revoked_at;
ALTER TABLE credentials DROP COLUMN prev_until;
ALTER TABLE credentials DROP COLUMN prev_api_key_hash;
ALTER TABLE credentials DROP COLUMN prev_password_hash;
DROP INDEX devices_grp;
ALTER TABLE devices DROP COLUMN management_ip;
ALTER TABLE devices DROP COLUMN hardware_version;
ALTER TABLE devices DROP COLUMN firmware_version;
ALTER TABLE devices DROP COLUMN location;
