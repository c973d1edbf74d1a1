-- The write path as server-side functions: one round trip per operation on plain PostgreSQL and,
-- distributed by p_tenant_id on Citus, one delegated single-shard transaction on the worker.
-- No INSERT inside a CTE and no now() (the time is a parameter): both break on Citus.
--
-- Failures the caller can act on are raised with stable SQLSTATEs and a JSON DETAIL, which
-- rolls the whole operation back:
--   AS409  revision conflict  {"item": 0-based index, "current_revision": n | null}
--   AS429  quota exceeded     {"quota": name, "limit": n, "usage": n}
--   AS412  stale schema       {"current_version": n | null}: the service validated against
--          another version than the namespace's current one; it reloads and validates again.
--
-- The functions rely on READ COMMITTED, PostgreSQL's default: each statement takes its snapshot
-- when it starts, so a statement after a wait sees what the waited-for transaction committed.
--
-- Locks are taken in one order (records by key, then expired records with SKIP LOCKED, then the
-- namespace counter row, then the install counter row), so concurrent writers cannot deadlock.
--
-- A function takes another's result by assignment (`v := f(...)`), not `SELECT * INTO v FROM
-- f(...)`: PL/pgSQL evaluates the call as a simple expression, without a statement's executor
-- and the result set that a function in FROM is read through (2.5 % of an insert's server
-- instructions, scripts/write-cost.sh).

-- Deletes up to p_limit expired records of one namespace, with an audit row each, and returns
-- what they held. Rows other transactions hold are skipped, so a sweep never waits. The caller
-- applies the freed amounts to the counters.
CREATE FUNCTION alga_storage_sweep(
    p_tenant_id text,
    p_install_id text,
    p_namespace text,
    p_now timestamptz,
    p_limit integer,
    p_extension_id text,
    p_request_id text,
    OUT freed_keys bigint,
    OUT freed_bytes bigint)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_expired record;
BEGIN
    freed_keys := 0;
    freed_bytes := 0;
    FOR v_expired IN
        SELECT r.key, r.revision, r.size_bytes
          FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id
           AND r.extension_install_id = p_install_id
           AND r.namespace = p_namespace
           AND r.ttl_expires_at <= p_now
         ORDER BY r.ttl_expires_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        DELETE FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id
           AND r.extension_install_id = p_install_id
           AND r.namespace = p_namespace
           AND r.key = v_expired.key;
        INSERT INTO ext_storage_audit
            (tenant_id, extension_install_id, extension_id, namespace, key, operation, actor,
             revision, bytes, request_id, occurred_at)
        VALUES
            (p_tenant_id, p_install_id, p_extension_id, p_namespace, v_expired.key, 'expire',
             'system:ttl', v_expired.revision, v_expired.size_bytes, p_request_id, p_now);
        freed_keys := freed_keys + 1;
        freed_bytes := freed_bytes + v_expired.size_bytes;
    END LOOP;
END
$fn$;

-- Expired records not yet swept across an install, for a write left over a quota's counter:
-- the namespaces found to hold only expired records, and the bytes of those found. The
-- install's namespaces are read in order, each one's expired records as a range of the partial
-- TTL index, until p_namespaces_needed namespaces and p_bytes_needed bytes are found (NULL:
-- none needed) or 1,000 records have been read (EXPIRED_LOOKUP_LIMIT in core/src/limits.rs).
CREATE FUNCTION alga_storage_expired(
    p_tenant_id text,
    p_install_id text,
    p_now timestamptz,
    p_namespaces_needed bigint,
    p_bytes_needed bigint,
    OUT namespaces bigint,
    OUT bytes bigint)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_budget bigint := 1000;
    v_space record;
    v_keys bigint;
    v_bytes bigint;
BEGIN
    namespaces := 0;
    bytes := 0;
    FOR v_space IN
        SELECT u.namespace, u.key_count
          FROM ext_storage_namespace_usage u
         WHERE u.tenant_id = p_tenant_id
           AND u.extension_install_id = p_install_id
           AND u.key_count > 0
         ORDER BY u.namespace
    LOOP
        EXIT WHEN v_budget = 0
            OR (namespaces >= coalesce(p_namespaces_needed, 0)
                AND bytes >= coalesce(p_bytes_needed, 0));
        SELECT count(*), coalesce(sum(x.size_bytes), 0) INTO v_keys, v_bytes
          FROM (SELECT r.size_bytes
                  FROM ext_storage_records r
                 WHERE r.tenant_id = p_tenant_id
                   AND r.extension_install_id = p_install_id
                   AND r.namespace = v_space.namespace
                   AND r.ttl_expires_at IS NOT NULL
                   AND r.ttl_expires_at <= p_now
                 LIMIT v_budget) x;
        v_budget := v_budget - v_keys;
        bytes := bytes + v_bytes;
        IF v_keys >= v_space.key_count THEN
            namespaces := namespaces + 1;
        END IF;
    END LOOP;
END
$fn$;

-- Applies a change of keys and bytes to the namespace and install counters and enforces the
-- quotas on growth; returns the counters after the change.
--
-- Quotas count live records, as usage does. The counters also hold records expired but not yet
-- swept (a write sweeps only its own namespace, a batch at a time), so a write that grows live
-- usage (p_added_keys records created, p_added_bytes more bytes than the live records it
-- replaced) and leaves a counter over its limit has the expired records subtracted before it
-- is refused; the refusal reports the live usage. Live usage never exceeds the counters: a
-- write within them, the usual case, never looks. The look stays bounded, never a count of the
-- install: up to 1,000 expired records of the write's namespace, and up to 1,000 across the
-- install's (alga_storage_expired), each read as a range of the partial TTL index, so no live
-- record is read. Expired records past the bound count until swept.
CREATE FUNCTION alga_storage_count(
    p_tenant_id text,
    p_install_id text,
    p_namespace text,
    p_delta_keys bigint,
    p_delta_bytes bigint,
    p_added_keys bigint,
    p_added_bytes bigint,
    p_max_namespaces bigint,
    p_max_keys bigint,
    p_max_bytes bigint,
    p_now timestamptz,
    OUT namespace_keys bigint,
    OUT namespaces bigint,
    OUT namespaces_delta bigint,
    OUT total_bytes bigint)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_live_keys bigint;
    v_new_namespace boolean := false;
    v_expired record;
BEGIN
    namespaces_delta := 0;
    -- UPDATE first: a shrinking change (negative deltas) always finds its row. The INSERT only
    -- runs for a namespace's first record; its ON CONFLICT covers a concurrent first record.
    UPDATE ext_storage_namespace_usage u
       SET key_count = u.key_count + p_delta_keys,
           byte_count = u.byte_count + p_delta_bytes
     WHERE u.tenant_id = p_tenant_id
       AND u.extension_install_id = p_install_id
       AND u.namespace = p_namespace
    RETURNING u.key_count INTO namespace_keys;
    IF NOT FOUND THEN
        INSERT INTO ext_storage_namespace_usage AS u
            (tenant_id, extension_install_id, namespace, key_count, byte_count)
        VALUES (p_tenant_id, p_install_id, p_namespace, p_delta_keys, p_delta_bytes)
        ON CONFLICT (tenant_id, extension_install_id, namespace) DO UPDATE
            SET key_count = u.key_count + EXCLUDED.key_count,
                byte_count = u.byte_count + EXCLUDED.byte_count
        RETURNING u.key_count INTO namespace_keys;
    END IF;

    IF namespace_keys - p_delta_keys = 0 AND namespace_keys > 0 THEN
        namespaces_delta := 1;
    ELSIF namespace_keys - p_delta_keys > 0 AND namespace_keys = 0 THEN
        namespaces_delta := -1;
    END IF;

    UPDATE ext_storage_install_usage u
       SET namespace_count = u.namespace_count + namespaces_delta,
           byte_count = u.byte_count + p_delta_bytes
     WHERE u.tenant_id = p_tenant_id
       AND u.extension_install_id = p_install_id
    RETURNING u.namespace_count, u.byte_count INTO namespaces, total_bytes;
    IF NOT FOUND THEN
        INSERT INTO ext_storage_install_usage AS u
            (tenant_id, extension_install_id, namespace_count, byte_count)
        VALUES (p_tenant_id, p_install_id, namespaces_delta, p_delta_bytes)
        ON CONFLICT (tenant_id, extension_install_id) DO UPDATE
            SET namespace_count = u.namespace_count + EXCLUDED.namespace_count,
                byte_count = u.byte_count + EXCLUDED.byte_count
        RETURNING u.namespace_count, u.byte_count INTO namespaces, total_bytes;
    END IF;

    -- A namespace's first live records add a namespace in use (its records that had expired,
    -- unswept, did not count); other namespaces count if any of their records is live.
    IF p_added_keys > 0 AND (namespace_keys > p_max_keys OR namespaces > p_max_namespaces) THEN
        SELECT namespace_keys - count(*) INTO v_live_keys
          FROM (SELECT 1
                  FROM ext_storage_records r
                 WHERE r.tenant_id = p_tenant_id
                   AND r.extension_install_id = p_install_id
                   AND r.namespace = p_namespace
                   AND r.ttl_expires_at IS NOT NULL
                   AND r.ttl_expires_at <= p_now
                 LIMIT 1000) e;
        IF v_live_keys > p_max_keys THEN
            RAISE EXCEPTION USING
                ERRCODE = 'AS429',
                MESSAGE = 'alga-storage: quota exceeded',
                DETAIL = json_build_object('quota', 'keys-per-namespace', 'limit', p_max_keys,
                                           'usage', v_live_keys - p_added_keys)::text;
        END IF;
        v_new_namespace := v_live_keys = p_added_keys;
    END IF;
    IF (v_new_namespace AND namespaces > p_max_namespaces)
       OR (p_added_bytes > 0 AND total_bytes > p_max_bytes) THEN
        v_expired := alga_storage_expired(
                p_tenant_id, p_install_id, p_now,
                CASE WHEN v_new_namespace THEN greatest(namespaces - p_max_namespaces, 0) END,
                CASE WHEN p_added_bytes > 0 THEN greatest(total_bytes - p_max_bytes, 0) END);
        IF v_new_namespace AND namespaces - v_expired.namespaces > p_max_namespaces THEN
            RAISE EXCEPTION USING
                ERRCODE = 'AS429',
                MESSAGE = 'alga-storage: quota exceeded',
                DETAIL = json_build_object(
                    'quota', 'namespaces', 'limit', p_max_namespaces,
                    'usage', namespaces - v_expired.namespaces - 1)::text;
        END IF;
        IF p_added_bytes > 0 AND total_bytes - v_expired.bytes > p_max_bytes THEN
            RAISE EXCEPTION USING
                ERRCODE = 'AS429',
                MESSAGE = 'alga-storage: quota exceeded',
                DETAIL = json_build_object(
                    'quota', 'total-bytes', 'limit', p_max_bytes,
                    'usage', total_bytes - v_expired.bytes - p_added_bytes)::text;
        END IF;
    END IF;
END
$fn$;

CREATE FUNCTION alga_storage_put(
    p_tenant_id text,
    p_install_id text,
    p_namespace text,
    p_keys text[],
    p_values jsonb[],
    p_metadata jsonb[],
    p_sizes bigint[],
    p_pre_kinds smallint[],       -- 0 none, 1 must be absent, 2 must be at p_pre_revisions[i]
    p_pre_revisions bigint[],
    p_expires_at timestamptz[],
    p_schema_version integer,     -- the version every value was validated against (NULL: none)
    p_now timestamptz,
    p_extension_id text,
    p_actor text,
    p_request_id text,
    p_max_namespaces bigint,
    p_max_keys bigint,
    p_max_bytes bigint,
    p_sweep_limit integer)
RETURNS TABLE (out_item integer, out_revision bigint, out_created boolean,
               out_namespace_keys bigint, out_namespace_keys_delta bigint,
               out_total_bytes bigint, out_total_bytes_delta bigint,
               out_namespaces bigint, out_namespaces_delta bigint)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_count integer := cardinality(p_keys);
    v_i integer;
    v_found boolean;
    v_old_revision bigint;
    v_old_size bigint;
    v_old_expired boolean;
    v_revision bigint;
    v_time timestamptz;
    v_revisions bigint[] := array_fill(0::bigint, ARRAY[cardinality(p_keys)]);
    v_created boolean[] := array_fill(false, ARRAY[cardinality(p_keys)]);
    v_delta_keys bigint := 0;
    v_delta_bytes bigint := 0;
    -- Growth of live usage that the counters' change does not show: records written over
    -- expired ones (the old size), and records swept. Live growth = delta + hidden.
    v_hidden_keys bigint := 0;
    v_hidden_bytes bigint := 0;
    v_swept record;
    v_counters record;
    v_counted boolean := false;
    v_current_schema integer;
    v_try_insert boolean;
    v_try_update boolean;
    v_order integer[];
BEGIN
    -- The values were validated against p_schema_version; refuse if the namespace has moved on
    -- (a registration by another host process). Registration takes the same advisory lock, so
    -- a registration and a write of one namespace are ordered. The lock is a statement of its
    -- own: the read below then takes its snapshot once the lock is granted, and sees the
    -- version of a registration this write waited for (in one statement, the read would use
    -- a snapshot from before the wait).
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended(p_tenant_id || '/' || p_install_id || '/' || p_namespace, 0));
    SELECT max(s.version) INTO v_current_schema
      FROM ext_storage_schemas s
     WHERE s.tenant_id = p_tenant_id
       AND s.extension_install_id = p_install_id
       AND s.namespace = p_namespace;
    IF v_current_schema IS DISTINCT FROM p_schema_version THEN
        RAISE EXCEPTION USING
            ERRCODE = 'AS412',
            MESSAGE = 'alga-storage: stale schema version',
            DETAIL = json_build_object('current_version', v_current_schema)::text;
    END IF;

    -- Items are written in key order (the lock order); a single item needs no sort.
    IF v_count = 1 THEN
        v_order := ARRAY[1];
    ELSE
        SELECT array_agg(t.ord::integer ORDER BY t.k COLLATE "C") INTO v_order
          FROM unnest(p_keys) WITH ORDINALITY AS t(k, ord);
    END IF;
    FOREACH v_i IN ARRAY v_order
    LOOP
        -- One statement on the record in the usual case: a create-only write tries the insert
        -- first, any other the overwrite of the live record at the required revision (without
        -- a precondition, then the insert). Otherwise the record is read, and what it holds
        -- decides.
        v_try_insert := p_pre_kinds[v_i] = 1;
        v_try_update := NOT v_try_insert;
        LOOP
            IF v_try_insert THEN
                INSERT INTO ext_storage_records AS r
                    (tenant_id, extension_install_id, namespace, key, value, metadata, revision,
                     schema_version, size_bytes, ttl_expires_at, created_at, updated_at)
                VALUES
                    (p_tenant_id, p_install_id, p_namespace, p_keys[v_i], p_values[v_i],
                     p_metadata[v_i], 1, p_schema_version, p_sizes[v_i], p_expires_at[v_i],
                     p_now, p_now)
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    v_revision := 1;
                    v_time := p_now;
                    v_created[v_i] := true;
                    v_delta_keys := v_delta_keys + 1;
                    v_delta_bytes := v_delta_bytes + p_sizes[v_i];
                    EXIT;
                END IF;
            END IF;

            IF v_try_update THEN
                v_try_update := false;
                -- The size it replaces comes back through prev_size_bytes, set from the old row.
                -- After a wait on the row, READ COMMITTED checks the WHERE again and computes the
                -- SET on the committed version: the precondition, the size and updated_at are
                -- those of the version replaced.
                UPDATE ext_storage_records r
                   SET value = p_values[v_i],
                       metadata = p_metadata[v_i],
                       revision = r.revision + 1,
                       schema_version = p_schema_version,
                       size_bytes = p_sizes[v_i],
                       prev_size_bytes = r.size_bytes,
                       ttl_expires_at = p_expires_at[v_i],
                       updated_at = greatest(p_now, r.updated_at)
                 WHERE r.tenant_id = p_tenant_id
                   AND r.extension_install_id = p_install_id
                   AND r.namespace = p_namespace
                   AND r.key = p_keys[v_i]
                   AND (r.ttl_expires_at IS NULL OR r.ttl_expires_at > p_now)
                   AND (p_pre_kinds[v_i] = 0 OR r.revision = p_pre_revisions[v_i])
                RETURNING r.revision, r.updated_at, r.prev_size_bytes
                     INTO v_revision, v_time, v_old_size;
                IF FOUND THEN
                    v_delta_bytes := v_delta_bytes + p_sizes[v_i] - v_old_size;
                    EXIT;
                END IF;
                -- No live record at the required revision. Without a precondition the key is
                -- most likely new: try the insert before reading.
                IF p_pre_kinds[v_i] = 0 THEN
                    v_try_insert := true;
                    CONTINUE;
                END IF;
            END IF;

            -- Read without locking; the UPDATE below locks the row and writes only if it still
            -- is the version read (revision, size and expiry), so the precondition and the
            -- counters' old size hold for what it replaces. Otherwise read again. (A lock taken
            -- here would write the tuple twice: measured 10-25 % of write throughput.)
            SELECT r.revision, r.size_bytes,
                   (r.ttl_expires_at IS NOT NULL AND r.ttl_expires_at <= p_now)
              INTO v_old_revision, v_old_size, v_old_expired
              FROM ext_storage_records r
             WHERE r.tenant_id = p_tenant_id
               AND r.extension_install_id = p_install_id
               AND r.namespace = p_namespace
               AND r.key = p_keys[v_i];
            v_found := FOUND;

            IF (p_pre_kinds[v_i] = 1 AND v_found AND NOT v_old_expired)
               OR (p_pre_kinds[v_i] = 2
                   AND (NOT v_found OR v_old_expired OR v_old_revision <> p_pre_revisions[v_i]))
            THEN
                RAISE EXCEPTION USING
                    ERRCODE = 'AS409',
                    MESSAGE = 'alga-storage: revision conflict',
                    DETAIL = json_build_object(
                        'item', v_i - 1,
                        'current_revision',
                        CASE WHEN v_found AND NOT v_old_expired THEN v_old_revision END)::text;
            END IF;

            IF v_found THEN
                -- An expired record is replaced as if absent: the key starts again at 1. A
                -- key's time never goes back: a write that waited for a later-clocked write
                -- of the key (host clocks are read before the wait) takes that write's time,
                -- so its updated_at and audit row follow the revisions.
                UPDATE ext_storage_records r
                   SET value = p_values[v_i],
                       metadata = p_metadata[v_i],
                       revision = CASE WHEN v_old_expired THEN 1 ELSE r.revision + 1 END,
                       schema_version = p_schema_version,
                       size_bytes = p_sizes[v_i],
                       prev_size_bytes = r.size_bytes,
                       ttl_expires_at = p_expires_at[v_i],
                       created_at = CASE WHEN v_old_expired THEN p_now ELSE r.created_at END,
                       updated_at = greatest(p_now, r.updated_at)
                 WHERE r.tenant_id = p_tenant_id
                   AND r.extension_install_id = p_install_id
                   AND r.namespace = p_namespace
                   AND r.key = p_keys[v_i]
                   AND r.revision = v_old_revision
                   AND r.size_bytes = v_old_size
                   AND (r.ttl_expires_at IS NOT NULL AND r.ttl_expires_at <= p_now) = v_old_expired
                RETURNING r.revision, r.updated_at INTO v_revision, v_time;
                IF NOT FOUND THEN
                    CONTINUE; -- changed (or deleted) since the read: read it again
                END IF;
                v_created[v_i] := v_old_expired;
                v_delta_bytes := v_delta_bytes + p_sizes[v_i] - v_old_size;
                IF v_old_expired THEN
                    v_hidden_keys := v_hidden_keys + 1;
                    v_hidden_bytes := v_hidden_bytes + v_old_size;
                END IF;
                EXIT;
            END IF;

            -- Absent: insert it. If a concurrent writer inserts it first, the insert does nothing
            -- and the next round reads that record.
            v_try_insert := true;
        END LOOP;

        v_revisions[v_i] := v_revision;
        INSERT INTO ext_storage_audit
            (tenant_id, extension_install_id, extension_id, namespace, key, operation, actor,
             revision, bytes, request_id, occurred_at)
        VALUES
            (p_tenant_id, p_install_id, p_extension_id, p_namespace, p_keys[v_i], 'put', p_actor,
             v_revision, p_sizes[v_i], p_request_id, v_time);
    END LOOP;

    -- Opportunistic TTL cleanup: the space of expired records counts for this very write. The
    -- probe (the first entry of the partial TTL index; its predicate is matched exactly, so even
    -- a generic plan uses it) spares the call when nothing has expired, the usual case.
    IF (SELECT min(r.ttl_expires_at) FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id
           AND r.extension_install_id = p_install_id
           AND r.namespace = p_namespace
           AND r.ttl_expires_at IS NOT NULL) <= p_now THEN
        v_swept := alga_storage_sweep(p_tenant_id, p_install_id, p_namespace, p_now,
                                      p_sweep_limit, p_extension_id, p_request_id);
        v_delta_keys := v_delta_keys - v_swept.freed_keys;
        v_delta_bytes := v_delta_bytes - v_swept.freed_bytes;
        v_hidden_keys := v_hidden_keys + v_swept.freed_keys;
        v_hidden_bytes := v_hidden_bytes + v_swept.freed_bytes;
    END IF;

    -- Same-size overwrites of live records change no counter and grow no usage: skip the
    -- counter rows, which every other write of the install contends on. (Hidden growth comes
    -- with hidden keys.)
    IF v_delta_keys <> 0 OR v_delta_bytes <> 0 OR v_hidden_keys > 0 THEN
        v_counters := alga_storage_count(p_tenant_id, p_install_id, p_namespace, v_delta_keys,
                                         v_delta_bytes, v_delta_keys + v_hidden_keys,
                                         v_delta_bytes + v_hidden_bytes, p_max_namespaces,
                                         p_max_keys, p_max_bytes, p_now);
        v_counted := true;
    END IF;

    FOR v_i IN 1 .. v_count LOOP
        out_item := v_i - 1;
        out_revision := v_revisions[v_i];
        out_created := v_created[v_i];
        IF v_counted THEN
            out_namespace_keys := v_counters.namespace_keys;
            out_namespace_keys_delta := v_delta_keys;
            out_total_bytes := v_counters.total_bytes;
            out_total_bytes_delta := v_delta_bytes;
            out_namespaces := v_counters.namespaces;
            out_namespaces_delta := v_counters.namespaces_delta;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$;

CREATE FUNCTION alga_storage_delete(
    p_tenant_id text,
    p_install_id text,
    p_namespace text,
    p_key text,
    p_pre_kind smallint,          -- 0 none, 1 must be absent, 2 must be at p_pre_revision
    p_pre_revision bigint,
    p_now timestamptz,
    p_extension_id text,
    p_actor text,
    p_request_id text,
    p_sweep_limit integer)
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_revision bigint;
    v_size bigint;
    v_expired boolean;
    v_updated_at timestamptz;
    v_deleted boolean;
    v_found boolean;
    v_visible boolean;
    v_delta_keys bigint := 0;
    v_delta_bytes bigint := 0;
    v_swept record;
    v_counters record;
BEGIN
    -- One statement on the record in the usual case: the DELETE of the record the
    -- precondition allows (any; an expired one; the live one at the revision). Its RETURNING
    -- sees the row it deleted, so the counters' change needs no read first. After a wait on
    -- the row, READ COMMITTED checks the WHERE again on the committed version and returns
    -- that version.
    LOOP
        DELETE FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id
           AND r.extension_install_id = p_install_id
           AND r.namespace = p_namespace
           AND r.key = p_key
           AND (p_pre_kind = 0
                OR (p_pre_kind = 1
                    AND r.ttl_expires_at IS NOT NULL AND r.ttl_expires_at <= p_now)
                OR (p_pre_kind = 2 AND r.revision = p_pre_revision
                    AND (r.ttl_expires_at IS NULL OR r.ttl_expires_at > p_now)))
        RETURNING r.revision, r.size_bytes,
                  (r.ttl_expires_at IS NOT NULL AND r.ttl_expires_at <= p_now), r.updated_at
             INTO v_revision, v_size, v_expired, v_updated_at;
        v_deleted := FOUND;
        EXIT WHEN v_deleted OR p_pre_kind = 0;

        -- Nothing the precondition allows: read the record (without locking). Absent when it
        -- must be absent: nothing to delete. A record that now matches was committed after
        -- the DELETE's snapshot: try again. Anything else is a conflict (so the loop ends
        -- without a concurrent commit, whatever the arguments).
        SELECT r.revision, (r.ttl_expires_at IS NOT NULL AND r.ttl_expires_at <= p_now)
          INTO v_revision, v_expired
          FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id
           AND r.extension_install_id = p_install_id
           AND r.namespace = p_namespace
           AND r.key = p_key;
        v_found := FOUND;
        EXIT WHEN p_pre_kind = 1 AND NOT v_found;
        v_visible := v_found AND NOT v_expired;
        CONTINUE WHEN (p_pre_kind = 1 AND v_found AND v_expired)
                   OR (p_pre_kind = 2 AND v_visible AND v_revision = p_pre_revision);
        RAISE EXCEPTION USING
            ERRCODE = 'AS409',
            MESSAGE = 'alga-storage: revision conflict',
            DETAIL = json_build_object(
                'item', 0,
                'current_revision', CASE WHEN v_visible THEN v_revision END)::text;
    END LOOP;
    v_visible := v_deleted AND NOT v_expired;

    IF v_deleted THEN
        v_delta_keys := -1;
        v_delta_bytes := -v_size;
        -- An expired record is removed as TTL cleanup, not as the caller's delete. The key's
        -- time never goes back (see alga_storage_put).
        INSERT INTO ext_storage_audit
            (tenant_id, extension_install_id, extension_id, namespace, key, operation, actor,
             revision, bytes, request_id, occurred_at)
        VALUES
            (p_tenant_id, p_install_id, p_extension_id, p_namespace, p_key,
             CASE WHEN v_visible THEN 'delete' ELSE 'expire' END,
             CASE WHEN v_visible THEN p_actor ELSE 'system:ttl' END,
             v_revision, v_size, p_request_id, greatest(p_now, v_updated_at));
    END IF;

    IF (SELECT min(r.ttl_expires_at) FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id
           AND r.extension_install_id = p_install_id
           AND r.namespace = p_namespace
           AND r.ttl_expires_at IS NOT NULL) <= p_now THEN
        v_swept := alga_storage_sweep(p_tenant_id, p_install_id, p_namespace, p_now,
                                      p_sweep_limit, p_extension_id, p_request_id);
        v_delta_keys := v_delta_keys - v_swept.freed_keys;
        v_delta_bytes := v_delta_bytes - v_swept.freed_bytes;
    END IF;
    IF v_delta_keys <> 0 OR v_delta_bytes <> 0 THEN
        -- Only shrinks: no quota can trip, so the limits are unbounded here. Called by
        -- assignment (see the top of this file); the counters it returns are not needed.
        v_counters := alga_storage_count(p_tenant_id, p_install_id, p_namespace, v_delta_keys,
                                         v_delta_bytes, 0, 0, NULL, NULL, NULL, p_now);
    END IF;
    RETURN v_visible;
END
$fn$;

-- Registers `p_schema` as the namespace's next schema version (1 for the first) and returns it,
-- with an audit row. The exclusive advisory lock orders it with the namespace's writes.
CREATE FUNCTION alga_storage_register_schema(
    p_tenant_id text,
    p_install_id text,
    p_namespace text,
    p_schema jsonb,
    p_now timestamptz,
    p_extension_id text,
    p_actor text,
    p_request_id text)
RETURNS integer
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_version integer;
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended(p_tenant_id || '/' || p_install_id || '/' || p_namespace, 0));
    SELECT coalesce(max(s.version), 0) + 1 INTO v_version
      FROM ext_storage_schemas s
     WHERE s.tenant_id = p_tenant_id
       AND s.extension_install_id = p_install_id
       AND s.namespace = p_namespace;
    INSERT INTO ext_storage_schemas
        (tenant_id, extension_install_id, namespace, version, schema, registered_by,
         registered_at)
    VALUES (p_tenant_id, p_install_id, p_namespace, v_version, p_schema, p_actor, p_now);
    INSERT INTO ext_storage_audit
        (tenant_id, extension_install_id, extension_id, namespace, key, operation, actor,
         revision, bytes, request_id, occurred_at)
    VALUES
        (p_tenant_id, p_install_id, p_extension_id, p_namespace, NULL, 'schema-register',
         p_actor, v_version, octet_length(p_schema::text), p_request_id, p_now);
    RETURN v_version;
END
$fn$;

-- Operator repair: compares the install's counters with its records and, with p_apply, sets
-- them to what the records give (an audit row per repaired counter). The namespace rows come
-- first, then the install's totals (out_namespace NULL, "keys" being namespaces that hold
-- records), all read in one statement: one snapshot, so a write committing meanwhile cannot
-- show as drift.
CREATE FUNCTION alga_storage_recount(
    p_tenant_id text,
    p_install_id text,
    p_apply boolean,
    p_now timestamptz,
    p_extension_id text,
    p_actor text,
    p_request_id text)
RETURNS TABLE (out_namespace text, out_counted_keys bigint, out_actual_keys bigint,
               out_counted_bytes bigint, out_actual_bytes bigint)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_row record;
BEGIN
    IF p_apply THEN
        -- Lock every counter the repair may set, in the writers' order (namespace rows by
        -- name, then the install row), so that no write changes one while it is recomputed:
        -- a counting write then waits for the repair and applies its change on top. Missing
        -- rows are created first (an unlocked row a write creates meanwhile would have its
        -- change overwritten), each a statement of its own so the next one sees what a
        -- waited-for writer committed.
        INSERT INTO ext_storage_namespace_usage (tenant_id, extension_install_id, namespace)
        SELECT DISTINCT r.tenant_id, r.extension_install_id, r.namespace
          FROM ext_storage_records r
         WHERE r.tenant_id = p_tenant_id AND r.extension_install_id = p_install_id
         ORDER BY r.namespace
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM ext_storage_namespace_usage u
          WHERE u.tenant_id = p_tenant_id AND u.extension_install_id = p_install_id
          ORDER BY u.namespace
            FOR UPDATE;
        INSERT INTO ext_storage_install_usage (tenant_id, extension_install_id)
        VALUES (p_tenant_id, p_install_id)
        ON CONFLICT DO NOTHING;
        PERFORM 1 FROM ext_storage_install_usage u
          WHERE u.tenant_id = p_tenant_id AND u.extension_install_id = p_install_id
            FOR UPDATE;
    END IF;

    FOR v_row IN
        WITH actual AS (
            SELECT r.namespace, count(*) AS keys, sum(r.size_bytes)::bigint AS bytes
              FROM ext_storage_records r
             WHERE r.tenant_id = p_tenant_id AND r.extension_install_id = p_install_id
             GROUP BY r.namespace),
        counted AS (
            SELECT u.namespace, u.key_count, u.byte_count
              FROM ext_storage_namespace_usage u
             WHERE u.tenant_id = p_tenant_id AND u.extension_install_id = p_install_id)
        SELECT coalesce(a.namespace, c.namespace)::text AS namespace,
               coalesce(c.key_count, 0) AS counted_keys,
               coalesce(a.keys, 0) AS actual_keys,
               coalesce(c.byte_count, 0) AS counted_bytes,
               coalesce(a.bytes, 0) AS actual_bytes
          FROM actual a
          FULL JOIN counted c ON c.namespace = a.namespace
        UNION ALL
        SELECT NULL,
               coalesce((SELECT u.namespace_count FROM ext_storage_install_usage u
                          WHERE u.tenant_id = p_tenant_id
                            AND u.extension_install_id = p_install_id), 0),
               (SELECT count(*) FROM actual),
               coalesce((SELECT u.byte_count FROM ext_storage_install_usage u
                          WHERE u.tenant_id = p_tenant_id
                            AND u.extension_install_id = p_install_id), 0),
               (SELECT coalesce(sum(a.bytes), 0)::bigint FROM actual a)
         ORDER BY 1 NULLS LAST
    LOOP
        CONTINUE WHEN v_row.counted_keys = v_row.actual_keys
                  AND v_row.counted_bytes = v_row.actual_bytes;
        out_namespace := v_row.namespace;
        out_counted_keys := v_row.counted_keys;
        out_actual_keys := v_row.actual_keys;
        out_counted_bytes := v_row.counted_bytes;
        out_actual_bytes := v_row.actual_bytes;
        RETURN NEXT;
        IF NOT p_apply THEN
            CONTINUE;
        END IF;
        IF v_row.namespace IS NOT NULL THEN
            INSERT INTO ext_storage_namespace_usage AS u
                (tenant_id, extension_install_id, namespace, key_count, byte_count)
            VALUES (p_tenant_id, p_install_id, v_row.namespace, v_row.actual_keys,
                    v_row.actual_bytes)
            ON CONFLICT (tenant_id, extension_install_id, namespace) DO UPDATE
                SET key_count = EXCLUDED.key_count, byte_count = EXCLUDED.byte_count;
        ELSE
            UPDATE ext_storage_install_usage u
               SET namespace_count = v_row.actual_keys, byte_count = v_row.actual_bytes
             WHERE u.tenant_id = p_tenant_id AND u.extension_install_id = p_install_id;
        END IF;
        INSERT INTO ext_storage_audit
            (tenant_id, extension_install_id, extension_id, namespace, key, operation,
             actor, revision, bytes, request_id, occurred_at)
        VALUES
            (p_tenant_id, p_install_id, p_extension_id, v_row.namespace, NULL,
             'counter-repair', p_actor, NULL, v_row.actual_bytes - v_row.counted_bytes,
             p_request_id, p_now);
    END LOOP;
END
$fn$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        PERFORM create_distributed_function(
            'alga_storage_sweep(text, text, text, timestamptz, integer, text, text)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
        PERFORM create_distributed_function(
            'alga_storage_expired(text, text, timestamptz, bigint, bigint)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
        PERFORM create_distributed_function(
            'alga_storage_count(text, text, text, bigint, bigint, bigint, bigint, bigint, '
            'bigint, bigint, timestamptz)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
        PERFORM create_distributed_function(
            'alga_storage_put(text, text, text, text[], jsonb[], jsonb[], bigint[], smallint[], '
            'bigint[], timestamptz[], integer, timestamptz, text, text, text, bigint, bigint, '
            'bigint, integer)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
        PERFORM create_distributed_function(
            'alga_storage_delete(text, text, text, text, smallint, bigint, timestamptz, text, '
            'text, text, integer)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
        PERFORM create_distributed_function(
            'alga_storage_register_schema(text, text, text, jsonb, timestamptz, text, text, text)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
        PERFORM create_distributed_function(
            'alga_storage_recount(text, text, boolean, timestamptz, text, text, text)',
            distribution_arg_name := 'p_tenant_id',
            colocate_with := 'ext_storage_records');
    END IF;
END
$$;
