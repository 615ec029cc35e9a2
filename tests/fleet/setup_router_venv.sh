#!/usr/bin/env bash
# Build the venv with the real sglang-router 0.3.2 (PyPI) that tests/fleet runs and parses against:
#
#   .cache/router-venv   sglang-router==0.3.2 and its runtime dependencies, all pinned in
#                        requirements-router.txt beside this script and installed --no-deps
#
# Idempotent: the venv carries a stamp keyed by the Python version and the hash of the pinned list; a warm
# run only compares it. Needs only the package registry (pip's configured index).
#
# Environment:
#   PYTHON                 interpreter to build the venv from (default: python3)
#   KT_LAUNCH_ROUTER_VENV  where to put it (default: <repo>/.cache/router-venv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${KT_LAUNCH_ROUTER_VENV:-$repo/.cache/router-venv}"
python="${PYTHON:-python3}"
lock="$here/requirements-router.txt"

pyver="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
key="python=$pyver lock=$(sha256sum "$lock" | cut -c1-16)"
# One builder per venv at a time: `make test` starts this in the background and each pytest worker's
# fixture runs it too; the others wait here, then find the stamp fresh. The lock lives in /tmp, not
# beside a venv that may be shared (KT_LAUNCH_ROUTER_VENV).
exec 9>"${TMPDIR:-/tmp}/kt-launch-setup-$(printf %s "$venv" | sha256sum | cut -c1-16).lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [[ -f "$venv/.kt-launch-stamp" ]] && [[ "$(cat "$venv/.kt-launch-stamp")" == "$key" ]]; then
    exit 0
fi

echo "[setup_router_venv] building $venv (sglang-router 0.3.2)" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
err="$(mktemp)"
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
        -r "$lock" 2>"$err"; then
    cat "$err" >&2
    rm -f "$err"
    exit 1
fi
rm -f "$err"
"$venv/bin/python" -c 'from sglang_router.launch_router import parse_router_args'
printf '%s' "$key" > "$venv/.kt-launch-stamp"  # last: an interrupted build is rebuilt next time
echo "[setup_router_venv] ready" >&2
