#!/usr/bin/env bash
# What the tests need beyond Rust: node and npm, the iframe SDK's npm packages (from the
# lockfile) and its TypeScript build, Chromium for the browser test, and promtool (Debian's
# prometheus package) for the alert rules. System packages come from Debian's apt when they are
# missing and we are root; otherwise the script says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; install them (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd guest-sdk/iframe
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
