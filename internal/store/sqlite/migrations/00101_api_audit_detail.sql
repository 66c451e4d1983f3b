-- What an audited API call changed, in words (a configuration change's old
-- and new checksums, for example).

-- +goose Up
ALTER TABLE api_audit ADD COLUMN detail TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE api_audit DROP COLUMN detail;
