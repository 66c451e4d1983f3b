-- Cluster mode (docs/CLUSTER.md). leases: one row per lease name (a
-- node's liveness, node/<id>, or a single-owner job's); token grows by
-- one at every change of holder and is the fencing token the holder's
-- writes are checked against. Expiry is compared with the database's
-- clock only, so the nodes' clocks do not matter.
-- session_generation numbers MQTT sessions across every node, so a
-- disconnect of an older session anywhere never overrides a newer one.

-- +goose Up
CREATE TABLE leases (
    name       text        PRIMARY KEY,
    holder     text        NOT NULL,
    token      bigint      NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE SEQUENCE session_generation;
-- The generation and node of each device's newest MQTT session: a change
-- of presence carrying an older generation than the stored one (a
-- taken-over session's disconnect, reported late by another node) does
-- not apply; the reaper finds a dead node's devices by node.
ALTER TABLE devices ADD COLUMN session_gen bigint, ADD COLUMN node text;
CREATE INDEX devices_node ON devices (node) WHERE connected;

-- +goose Down
DROP INDEX devices_node;
ALTER TABLE devices DROP COLUMN session_gen, DROP COLUMN node;
DROP SEQUENCE session_generation;
DROP TABLE leases;
