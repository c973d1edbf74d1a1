-- The embedded store's tables: the same shape as the PostgreSQL ones (migrations/0001), one
-- file, single writer. Text compares bytewise (BINARY collation), so key order is byte order.
-- Times are microseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS records (
    tenant_id      TEXT NOT NULL,
    install_id     TEXT NOT NULL,
    namespace      TEXT NOT NULL,
    key            TEXT NOT NULL,
    value          TEXT NOT NULL,
    metadata       TEXT,
    revision       INTEGER NOT NULL,
    schema_version INTEGER,
    size_bytes     INTEGER NOT NULL,
    expires_at     INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, install_id, namespace, key)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS records_ttl
    ON records (tenant_id, install_id, namespace, expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS namespace_usage (
    tenant_id  TEXT NOT NULL,
    install_id TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    key_count  INTEGER NOT NULL,
    byte_count INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, install_id, namespace)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS install_usage (
    tenant_id       TEXT NOT NULL,
    install_id      TEXT NOT NULL,
    namespace_count INTEGER NOT NULL,
    byte_count      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, install_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS schemas (
    tenant_id     TEXT NOT NULL,
    install_id    TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    version       INTEGER NOT NULL,
    schema        TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, install_id, namespace, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id    TEXT NOT NULL,
    install_id   TEXT NOT NULL,
    extension_id TEXT NOT NULL,
    namespace    TEXT,
    key          TEXT,
    operation    TEXT NOT NULL,
    actor        TEXT NOT NULL,
    revision     INTEGER,
    bytes        INTEGER,
    request_id   TEXT,
    occurred_at  INTEGER NOT NULL,
    relayed_at   INTEGER
);

CREATE INDEX IF NOT EXISTS audit_install_time ON audit (tenant_id, install_id, occurred_at, id);
CREATE INDEX IF NOT EXISTS audit_unrelayed ON audit (tenant_id, occurred_at, id)
    WHERE relayed_at IS NULL;
