#!/usr/bin/env bash
# What the tests need beyond Rust: node and npm, the iframe SDK's npm packages (from the
# lockfile) and its TypeScript build, Chromium for the browser test, promtool (Debian's
# prometheus package) for the alert rules, and schemathesis (PyPI) for the OpenAPI fuzz run.
# System packages come from Debian's apt when they are missing and we are root; otherwise the
# script says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
command -v c++ >/dev/null || missing+=(g++) # libFuzzer (scripts/fuzz.sh) is C++
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# schemathesis (PyPI), pinned, in a virtual environment under target/ (tests/tests/schemathesis.rs).
venv=target/schemathesis-venv
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$venv" 2>/dev/null || {
        [ "$(id -u)" -eq 0 ] && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cd guest-sdk/iframe
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
