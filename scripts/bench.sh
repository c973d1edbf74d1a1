#!/usr/bin/env bash
# Reproduces docs/performance.md: builds the load harness in release mode and runs it against
# DATABASE_URL or a throwaway PostgreSQL. Extra arguments go to the harness (see --help); the
# JSON report is written to target/bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
if [ -z "${DATABASE_URL:-}" ]; then
    source scripts/throwaway-postgres.sh
fi

cargo build --locked --release -p alga-storage-bench
target/release/alga-storage-bench --json target/bench.json "$@"
