-- Configuration management (internal/deviceconfig): templates, the
-- template lists and variables of groups and devices, what was rendered
-- for each device with its status, the last rendered configurations of
-- each device, and the state of the hub's management channel to it.
-- JSON columns hold objects (config, defaults, vars, overrides) or arrays
-- of ids (types, templates).

-- +goose Up
CREATE TABLE config_templates (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL DEFAULT '',
    config     TEXT    NOT NULL,
    defaults   TEXT    NOT NULL DEFAULT '{}',
    is_default INTEGER NOT NULL DEFAULT 0,
    required   INTEGER NOT NULL DEFAULT 0,
    types      TEXT    NOT NULL DEFAULT '[]',
    version    INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE config_groups (
    group_id   TEXT    PRIMARY KEY,
    templates  TEXT    NOT NULL DEFAULT '[]',
    vars       TEXT    NOT NULL DEFAULT '{}',
    updated_at INTEGER NOT NULL
);

-- status: modified, applied, error, deactivating, deactivated.
CREATE TABLE device_configs (
    device_id        TEXT    PRIMARY KEY,
    backend          TEXT    NOT NULL,
    templates        TEXT    NOT NULL DEFAULT '[]',
    vars             TEXT    NOT NULL DEFAULT '{}',
    overrides        TEXT    NOT NULL DEFAULT '{}',
    status           TEXT    NOT NULL,
    error            TEXT    NOT NULL DEFAULT '',
    status_since     INTEGER NOT NULL,
    checksum         TEXT    NOT NULL,
    rendered         BLOB    NOT NULL,
    applied_checksum TEXT    NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX device_configs_status ON device_configs (status, status_since);

CREATE TABLE device_config_history (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id  TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    backend    TEXT    NOT NULL,
    rendered   BLOB    NOT NULL,
    templates  TEXT    NOT NULL DEFAULT '[]',
    vars       TEXT    NOT NULL DEFAULT '{}',
    overrides  TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE INDEX device_config_history_device ON device_config_history (device_id, id);

-- is_working is NULL until the first outcome of a config push or command.
CREATE TABLE device_management (
    device_id      TEXT    PRIMARY KEY,
    is_working     INTEGER,
    failure_reason TEXT    NOT NULL DEFAULT '',
    updated_at     INTEGER NOT NULL
);

-- +goose Down
DROP TABLE device_management;
DROP TABLE device_config_history;
DROP TABLE device_configs;
DROP TABLE config_groups;
DROP TABLE config_templates;
