#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the wasm target, node packages, Chromium and
# promtool,
# starts a throwaway PostgreSQL unless DATABASE_URL is set, builds the guest fixtures
# (tests/build.rs) and the iframe SDK, and runs the suites (Rust, node, browser), then fuzzes the
# input parsers for a bounded time (scripts/fuzz.sh; installs nightly and cargo-fuzz if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
scripts/install-test-deps.sh
if [ -z "${DATABASE_URL:-}" ]; then
    source scripts/throwaway-postgres.sh
fi

cargo fmt --all --check
rustfmt --edition 2024 --check fuzz/fuzz_targets/*.rs
cargo clippy --locked --workspace --exclude alga-storage-fixtures --all-targets -- -D warnings
cargo clippy --locked --package alga-storage-fixtures --target wasm32-wasip2 --bins -- -D warnings
# The README test runs the run command as written (`cargo run -p alga-storage`), whose feature
# set differs from the whole workspace's; build it first so the test only starts it.
cargo build --locked -p alga-storage
cargo test --locked --workspace --exclude alga-storage-fixtures "$@"
# Coverage-guided fuzzing of the input parsers, 30 s per target (nightly + cargo-fuzz).
scripts/fuzz.sh
