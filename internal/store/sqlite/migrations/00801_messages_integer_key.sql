-- +goose Up
ALTER TABLE messages ADD COLUMN dev INTEGER;
ALTER TABLE messages ADD COLUMN mkey INTEGER;
DROP INDEX messages_device_msg_id;
CREATE UNIQUE INDEX messages_dev_mkey ON messages (dev, mkey);

-- +goose Down
DROP INDEX messages_dev_mkey;
ALTER TABLE messages DROP COLUMN mkey;
ALTER TABLE messages DROP COLUMN dev;
CREATE UNIQUE INDEX messages_device_msg_id ON messages (device_id, msg_id);
