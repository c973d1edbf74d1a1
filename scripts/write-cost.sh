#!/usr/bin/env bash
# Counts the CPU instructions the PostgreSQL server spends per write: the raw SQL of the load
# harness's baseline against the write functions, for an insert, a revision-checked update and a
# revision-checked delete of ~1 KiB values (`alga_storage_put`, `alga_storage_delete`; the raw
# delete has the statements of the harness's `churn` workload, bench/src/raw.rs). Each case
# runs in a single-user backend under valgrind's callgrind, twice (with a base number of
# operations and with N more), so start-up and plan caching cancel out:
# per operation = (count with base + N − count with base) / N. Instruction counts repeat to a
# fraction of a percent where CPU time on a shared VM moves by tens of percent, so a change to
# the write function can be judged by them (docs/performance-log.md, eighth run).
#
#   scripts/write-cost.sh [N]                  # N operations measured per case (default 1000)
#   WRITE_COST_SQL=f.sql scripts/write-cost.sh # run f.sql after the migrations (a candidate
#                                              # `CREATE OR REPLACE FUNCTION alga_storage_put`
#                                              # or `alga_storage_delete`)
#   WRITE_COST_CASES=delete scripts/write-cost.sh # only these writes, of insert, update and
#                                                 # delete (default: all three)
#
# Needs valgrind, psql and PostgreSQL's server binaries; uses a throwaway cluster.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

N="${1:-1000}"
BASE=200
CASES="${WRITE_COST_CASES:-insert update delete}"
for write in $CASES; do
    case "$write" in
        insert | update | delete) ;;
        *) echo "WRITE_COST_CASES: unknown write $write (insert, update or delete)" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is needed (apt-get install postgresql-client)" >&2; exit 1; }
source scripts/throwaway-postgres.sh

for migration in migrations/*.up.sql; do
    psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$migration" >/dev/null
done
if [ -n "${WRITE_COST_SQL:-}" ]; then
    psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -f "$WRITE_COST_SQL" >/dev/null
fi
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null <<'SQL'
INSERT INTO ext_storage_namespace_usage VALUES ('t1', 'i1', 'ns', 0, 0);
INSERT INTO ext_storage_install_usage VALUES ('t1', 'i1', 1, 0);
SQL
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w stop >/dev/null

VALUE="{\"n\": \"$(printf 'x%.0s' $(seq 1000))\"}"
SIZE=1010

# The function with one item; $3 the precondition kind (1 absent, 2 at revision $4). Called as
# the service calls it, `SELECT … FROM`, but with no column selected: a single-user backend
# prints every row in text, which the service's binary protocol does not pay (an aggregate
# around the call, as until the twelfth session, cost 21 k per write: docs/performance-log.md).
PREPARE_PUT="PREPARE put(text, jsonb, smallint, bigint) AS SELECT FROM alga_storage_put(\
't1', 'i1', 'ns', ARRAY[\$1], ARRAY[\$2], ARRAY[NULL::jsonb], ARRAY[$SIZE::bigint], ARRAY[\$3], \
ARRAY[\$4], ARRAY[NULL::timestamptz], NULL::integer, now(), 'ext', 'bench', NULL, 1000, \
100000000, 100000000000, 100)"
# The delete function at revision 1, as the service calls it.
PREPARE_DELETE="PREPARE remove(text) AS SELECT FROM alga_storage_delete('t1', 'i1', 'ns', \$1, \
2::smallint, 1, now(), 'ext', 'bench', NULL, 100)"

# The harness's raw write (bench/src/raw.rs): the record, its counters when they change, its
# audit row, in one transaction.
PREPARE_RAW="PREPARE ins(text, jsonb) AS INSERT INTO ext_storage_records (tenant_id, \
extension_install_id, namespace, key, value, revision, size_bytes, created_at, updated_at) \
VALUES ('t1', 'i1', 'ns', \$1, \$2, 1, $SIZE, now(), now())
PREPARE upd(text, jsonb) AS UPDATE ext_storage_records SET value = \$2, revision = revision + 1, \
size_bytes = $SIZE, updated_at = now() WHERE tenant_id = 't1' AND extension_install_id = 'i1' \
AND namespace = 'ns' AND key = \$1 AND revision = 1
PREPARE count_namespace AS UPDATE ext_storage_namespace_usage SET key_count = key_count + 1, \
byte_count = byte_count + $SIZE WHERE tenant_id = 't1' AND extension_install_id = 'i1' \
AND namespace = 'ns'
PREPARE count_install AS UPDATE ext_storage_install_usage SET byte_count = byte_count + $SIZE \
WHERE tenant_id = 't1' AND extension_install_id = 'i1'
PREPARE audit(text, bigint) AS INSERT INTO ext_storage_audit (tenant_id, extension_install_id, \
extension_id, namespace, key, operation, actor, revision, bytes, request_id, occurred_at) \
VALUES ('t1', 'i1', 'i1', 'ns', \$1, 'put', 'bench', \$2, $SIZE, NULL, now())
PREPARE del(text) AS DELETE FROM ext_storage_records WHERE tenant_id = 't1' \
AND extension_install_id = 'i1' AND namespace = 'ns' AND key = \$1 AND revision = 1
PREPARE uncount_namespace AS UPDATE ext_storage_namespace_usage SET key_count = key_count - 1, \
byte_count = byte_count - $SIZE WHERE tenant_id = 't1' AND extension_install_id = 'i1' \
AND namespace = 'ns'
PREPARE uncount_install AS UPDATE ext_storage_install_usage SET byte_count = byte_count - $SIZE \
WHERE tenant_id = 't1' AND extension_install_id = 'i1'
PREPARE audit_delete(text) AS INSERT INTO ext_storage_audit (tenant_id, extension_install_id, \
extension_id, namespace, key, operation, actor, revision, bytes, request_id, occurred_at) \
VALUES ('t1', 'i1', 'i1', 'ns', \$1, 'delete', 'bench', 1, $SIZE, NULL, now())"

# The single-user script of one case: one statement per line. Updates and deletes need their
# records, so those cases first insert BASE + N of them through the function (the same in both
# runs).
script() {
    local case="$1" count="$2" i
    echo "$PREPARE_PUT"
    echo "$PREPARE_DELETE"
    echo "$PREPARE_RAW"
    if [ "${case#*-}" != insert ]; then
        for ((i = 0; i < BASE + N; i++)); do echo "EXECUTE put('k$i', '$VALUE', 1, NULL)"; done
    fi
    for ((i = 0; i < count; i++)); do
        case "$case" in
            raw-insert) printf '%s\n' BEGIN "EXECUTE ins('k$i', '$VALUE')" "EXECUTE count_namespace" \
                "EXECUTE count_install" "EXECUTE audit('k$i', 1)" COMMIT ;;
            raw-update) printf '%s\n' BEGIN "EXECUTE upd('k$i', '$VALUE')" \
                "EXECUTE audit('k$i', 2)" COMMIT ;;
            raw-delete) printf '%s\n' BEGIN "EXECUTE del('k$i')" "EXECUTE uncount_namespace" \
                "EXECUTE uncount_install" "EXECUTE audit_delete('k$i')" COMMIT ;;
            function-insert) echo "EXECUTE put('k$i', '$VALUE', 1, NULL)" ;;
            function-update) echo "EXECUTE put('k$i', '$VALUE', 2, 1)" ;;
            function-delete) echo "EXECUTE remove('k$i')" ;;
        esac
    done
}

# Instructions of a single-user backend running `count` operations of `case` on a fresh copy
# (`cp -a` keeps the data directory's owner), with the throwaway cluster's settings.
instructions() {
    local case="$1" count="$2" run="$PG_DIR/run" collected
    rm -rf "$run" && cp -a "$PG_DIR/data" "$run"
    script "$case" "$count" >"$PG_DIR/script.sql"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$PG_DIR/callgrind.out" \
        "$PG_BIN/postgres" --single -D "$run" "${PG_SETTINGS[@]}" postgres \
        <"$PG_DIR/script.sql" >"$PG_DIR/out.log" 2>"$PG_DIR/valgrind.log"
    if grep -E -q 'ERROR|FATAL|PANIC' "$PG_DIR/out.log"; then
        grep -E -m 3 'ERROR|FATAL|PANIC' "$PG_DIR/out.log" >&2
        exit 1
    fi
    collected=$(sed -n 's/.*Collected : //p' "$PG_DIR/valgrind.log")
    [[ "$collected" =~ ^[0-9]+$ ]] || { cat "$PG_DIR/valgrind.log" >&2; exit 1; }
    echo "$collected"
}

echo "server instructions per write ($N measured per case, ~1 KiB values)"
echo "| write | raw SQL | write function | × raw |"
echo "| --- | ---: | ---: | ---: |"
declare -A per_op
for write in $CASES; do
    for path in raw function; do
        low=$(instructions "$path-$write" "$BASE")
        high=$(instructions "$path-$write" $((BASE + N)))
        per_op[$path]=$(((high - low) / N))
    done
    ratio=$(awk "BEGIN { printf \"%.2f\", ${per_op[function]} / ${per_op[raw]} }")
    echo "| $write | ${per_op[raw]} | ${per_op[function]} | $ratio |"
done
