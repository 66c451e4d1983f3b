-- How registration_keys.key_hash is made (issue 9, finding 13): 'sha256'
-- is the plain SHA-256 of the hardware key (before this migration);
-- 'hmac' is an HMAC-SHA256 of that digest keyed with the hub's
-- registration secret (a file in the data directory), so that a copied
-- database alone cannot be attacked offline. provisioning.PrepareKeys
-- moves a database from 'sha256' to 'hmac' at start.

-- +goose Up
CREATE TABLE registration_key_scheme (scheme TEXT NOT NULL);
INSERT INTO registration_key_scheme (scheme) VALUES ('sha256');

-- +goose Down
DROP TABLE registration_key_scheme;
