-- Configuration management (internal/deviceconfig): templates, the
-- template lists and variables of groups and devices, what was rendered
-- for each device with its status, the last rendered configurations of
-- each device, and the state of the hub's management channel to it.

-- +goose Up
CREATE TABLE config_templates (
    id         text        PRIMARY KEY,
    name       text        NOT NULL DEFAULT '',
    config     text        NOT NULL, -- text, not jsonb: numbers render as written
    defaults   jsonb       NOT NULL DEFAULT '{}',
    is_default boolean     NOT NULL DEFAULT false,
    required   boolean     NOT NULL DEFAULT false,
    types      jsonb       NOT NULL DEFAULT '[]',
    version    bigint      NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE config_groups (
    group_id   text        PRIMARY KEY,
    templates  jsonb       NOT NULL DEFAULT '[]',
    vars       jsonb       NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL
);

-- status: modified, applied, error, deactivating, deactivated.
-- templates is text (not jsonb) so that its order is kept as written.
CREATE TABLE device_configs (
    device_id        text        PRIMARY KEY,
    backend          text        NOT NULL,
    templates        text        NOT NULL DEFAULT '[]',
    vars             jsonb       NOT NULL DEFAULT '{}',
    overrides        text        NOT NULL DEFAULT '{}',
    status           text        NOT NULL,
    error            text        NOT NULL DEFAULT '',
    status_since     timestamptz NOT NULL,
    checksum         text        NOT NULL,
    rendered         bytea       NOT NULL,
    applied_checksum text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX device_configs_status ON device_configs (status, status_since);

CREATE TABLE device_config_history (
    id         bigserial   PRIMARY KEY,
    device_id  text        NOT NULL,
    checksum   text        NOT NULL,
    backend    text        NOT NULL,
    rendered   bytea       NOT NULL,
    templates  text        NOT NULL DEFAULT '[]',
    vars       jsonb       NOT NULL DEFAULT '{}',
    overrides  text        NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);
CREATE INDEX device_config_history_device ON device_config_history (device_id, id);

-- is_working is NULL until the first outcome of a config push or command.
CREATE TABLE device_management (
    device_id      text        PRIMARY KEY,
    is_working     boolean,
    failure_reason text        NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL
);

-- +goose Down
DROP TABLE device_management;
DROP TABLE device_config_history;
DROP TABLE device_configs;
DROP TABLE config_groups;
DROP TABLE config_templates;
