-- Cluster mode: a node that does not know an API key yet (the device was
-- provisioned or rotated through another node a moment ago) finds its
-- device by the key's hash (Store.DeviceByAPIKey).

-- +goose Up
CREATE INDEX credentials_api_key_hash ON credentials (api_key_hash);
CREATE INDEX credentials_prev_api_key_hash ON credentials (prev_api_key_hash) WHERE prev_api_key_hash IS NOT NULL;

-- +goose Down
DROP INDEX credentials_prev_api_key_hash;
DROP INDEX credentials_api_key_hash;
