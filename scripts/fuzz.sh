#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, AddressSanitizer) of the parsers that face
# untrusted input: keys/namespaces/prefixes, list cursors, JSON values and session tokens.
# Bounded: each target runs FUZZ_SECONDS (default 30) from the committed seeds plus the corpus it
# grew before (fuzz/target/corpus, not committed). A finding stops the script with the input
# saved under fuzz/artifacts/<target>/; reproduce it with
#   (cd fuzz && cargo +nightly-2026-05-20 fuzz run <target> artifacts/<target>/<file>)
# Installs what it needs: a minimal nightly toolchain (sanitizer flags are nightly-only) and
# cargo-fuzz (into target/tools, so a fresh clone builds it once).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-30}"
# A dated nightly, so a fresh machine fuzzes with the compiler this was tested with.
nightly=nightly-2026-05-20
if ! rustup run "$nightly" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$nightly" --profile minimal
fi
tools="$PWD/target/tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"

cd fuzz
cargo "+$nightly" fuzz build
targets=$(cargo "+$nightly" fuzz list)
[ -n "$targets" ] || { echo "fuzz: no targets listed" >&2; exit 1; }
for target in $targets; do
    corpus="target/corpus/$target"
    log="target/fuzz-$target.log"
    mkdir -p "$corpus"
    echo "fuzz: $target for ${seconds}s"
    if ! cargo "+$nightly" fuzz run "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $target found a failing input (see fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" || true
done
