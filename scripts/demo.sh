#!/usr/bin/env bash
# The README's run command: serves the REST gateway on the embedded default store
# (./alga-storage.db, no database server needed) with a demo tenant and install, and prints a
# token and `curl` lines that work. Extra arguments go to `alga-storage serve` (see --help).
# Ctrl-C stops it; the data stays in the file.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --locked --quiet -p alga-storage -- serve --demo "$@"
