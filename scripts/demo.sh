#!/usr/bin/env bash
# Runs the example extension (fixtures/src/bin/store_roundtrip.rs, built to a component) with
# storage attached, against DATABASE_URL or a throwaway PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
if [ -z "${DATABASE_URL:-}" ]; then
    source scripts/throwaway-postgres.sh
fi

cargo build --locked --release -p alga-storage-fixtures --target wasm32-wasip2 --bin demo_notes
cargo run --locked -p alga-storage -- migrate up
cargo run --locked -p alga-storage -- run \
    target/wasm32-wasip2/release/demo_notes.wasm --tenant demo-tenant --install demo-install
