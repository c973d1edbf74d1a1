#!/usr/bin/env bash
# Sourced by scripts/test.sh, scripts/demo.sh and scripts/write-cost.sh: starts a throwaway
# PostgreSQL cluster in a temporary directory on a free loopback port, exports DATABASE_URL, and
# removes the cluster when the calling script exits. PostgreSQL refuses to run as root, so as root
# it runs as `postgres`.

pg_bindir() {
    local dir
    for dir in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if ! PG_BIN="$(pg_bindir)"; then
    echo "PostgreSQL server binaries not found; installing Debian's postgresql package" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN="$(pg_bindir)" || { echo "cannot find initdb after installing postgresql" >&2; exit 1; }
fi

PG_DIR="$(mktemp -d /tmp/alga-pg.XXXXXX)"
PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

if [ "$(id -u)" = 0 ]; then
    chown postgres "$PG_DIR"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

stop_throwaway_postgres() {
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap stop_throwaway_postgres EXIT

as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
    --no-sync >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
# Durability traded for speed: the cluster is thrown away. write-cost.sh starts its
# single-user backends with the same settings.
PG_SETTINGS=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w start -o \
    "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 \
     ${PG_SETTINGS[*]}" >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; exit 1; }

export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "throwaway PostgreSQL at $DATABASE_URL ($PG_DIR)" >&2
