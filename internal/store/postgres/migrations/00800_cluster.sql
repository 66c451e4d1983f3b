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

-- +goose Down
DROP SEQUENCE session_generation;
DROP TABLE leases;
