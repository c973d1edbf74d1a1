-- Records, usage counters, schema registry and audit outbox. Every table leads with tenant_id,
-- the distribution column on Citus, and every unique key includes it; the tables are co-located
-- so that one operation is one single-shard transaction.

CREATE TABLE ext_storage_records (
    tenant_id            text NOT NULL,
    extension_install_id text NOT NULL,
    namespace            text COLLATE "C" NOT NULL,
    -- "C" collation: byte order for keyset pagination, and prefix ranges that use the index.
    key                  text COLLATE "C" NOT NULL,
    value                jsonb NOT NULL,
    metadata             jsonb,
    revision             bigint NOT NULL CHECK (revision >= 1),
    schema_version       integer,
    -- Bytes charged to quotas (key + value + metadata as sent); given back on delete.
    size_bytes           bigint NOT NULL CHECK (size_bytes >= 0),
    -- Set by the write function's overwrite to the size it replaces, and read only through
    -- that UPDATE's RETURNING (which sees only the new row before PostgreSQL 18): the counters'
    -- change without reading the record first. Meaningless anywhere else.
    prev_size_bytes      bigint,
    ttl_expires_at       timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, extension_install_id, namespace, key)
);

-- Opportunistic TTL cleanup finds a namespace's expired rows without scanning live ones.
CREATE INDEX ext_storage_records_ttl
    ON ext_storage_records (tenant_id, extension_install_id, namespace, ttl_expires_at)
    WHERE ttl_expires_at IS NOT NULL;

-- Per-namespace counters, maintained in the write's transaction (quota checks never COUNT(*)).
CREATE TABLE ext_storage_namespace_usage (
    tenant_id            text NOT NULL,
    extension_install_id text NOT NULL,
    namespace            text COLLATE "C" NOT NULL,
    key_count            bigint NOT NULL DEFAULT 0 CHECK (key_count >= 0),
    byte_count           bigint NOT NULL DEFAULT 0 CHECK (byte_count >= 0),
    PRIMARY KEY (tenant_id, extension_install_id, namespace)
);

-- Per-install counters: namespaces holding records and bytes across them.
CREATE TABLE ext_storage_install_usage (
    tenant_id            text NOT NULL,
    extension_install_id text NOT NULL,
    namespace_count      bigint NOT NULL DEFAULT 0 CHECK (namespace_count >= 0),
    byte_count           bigint NOT NULL DEFAULT 0 CHECK (byte_count >= 0),
    PRIMARY KEY (tenant_id, extension_install_id)
);

-- JSON Schema registry: integer versions per namespace, registered by the host only.
CREATE TABLE ext_storage_schemas (
    tenant_id            text NOT NULL,
    extension_install_id text NOT NULL,
    namespace            text COLLATE "C" NOT NULL,
    version              integer NOT NULL CHECK (version >= 1),
    schema               jsonb NOT NULL,
    registered_by        text NOT NULL,
    registered_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, extension_install_id, namespace, version)
);

-- Audit outbox: one row per committed mutation, written in the mutation's transaction.
-- Ids are per-node ranges on Citus: order by occurred_at, then id.
CREATE TABLE ext_storage_audit (
    tenant_id            text NOT NULL,
    id                   bigserial NOT NULL,
    extension_install_id text NOT NULL,
    extension_id         text NOT NULL,
    namespace            text COLLATE "C",
    key                  text COLLATE "C",
    operation            text NOT NULL,
    actor                text NOT NULL,
    revision             bigint,
    bytes                bigint,
    request_id           text,
    occurred_at          timestamptz NOT NULL,
    -- Set when the outbox relay has shipped the row (a per-row mark, not a high-water mark:
    -- concurrent transactions commit out of occurred_at order, and a mark never skips one).
    relayed_at           timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE INDEX ext_storage_audit_install_time
    ON ext_storage_audit (tenant_id, extension_install_id, occurred_at, id);

CREATE INDEX ext_storage_audit_unrelayed
    ON ext_storage_audit (tenant_id, occurred_at, id) WHERE relayed_at IS NULL;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        -- The host calls the write functions as `SELECT * FROM f(...)`, which Citus delegates
        -- to the tenant's worker from 11.0 on. Before, they would run on the coordinator: a
        -- round trip per statement, and their advisory locks apart from the registration's.
        IF split_part((SELECT extversion FROM pg_extension WHERE extname = 'citus'), '.', 1)::int
           < 11 THEN
            RAISE EXCEPTION 'alga-storage needs Citus 11.0 or later, found %',
                (SELECT extversion FROM pg_extension WHERE extname = 'citus');
        END IF;
        PERFORM create_distributed_table('ext_storage_records', 'tenant_id');
        PERFORM create_distributed_table('ext_storage_namespace_usage', 'tenant_id',
                                         colocate_with => 'ext_storage_records');
        PERFORM create_distributed_table('ext_storage_install_usage', 'tenant_id',
                                         colocate_with => 'ext_storage_records');
        PERFORM create_distributed_table('ext_storage_schemas', 'tenant_id',
                                         colocate_with => 'ext_storage_records');
        PERFORM create_distributed_table('ext_storage_audit', 'tenant_id',
                                         colocate_with => 'ext_storage_records');
    END IF;
END
$$;
