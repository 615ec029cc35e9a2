#!/usr/bin/env bash
# Build the two real-parser environments the contract tests run against:
#
#   .cache/venvs/sglang-kt   sglang-kt 0.7.2 (+ kt-kernel 0.7.2, never imported)
#   .cache/venvs/sglang      upstream sglang 0.5.23 (+ kt-kernel 0.7.2, never imported)
#
# Each venv gets its package with --no-deps plus exactly what
# `import sglang.srt.server_args` needs on a CPU (the pinned lists beside this
# script, installed --no-deps, so nothing is resolved and nothing unpinned
# comes in). torch is installed once, into .cache/venvs/_torch-<key>, and both
# venvs see it through a .pth file: torch 2.14.1 (upstream's own pin) and the
# matching torchvision 0.29.1, both from this machine's local wheel store.
#
# Idempotent: every environment carries a stamp keyed by the Python version and
# the hash of its pinned list; a warm run only compares stamps (well under a
# second). A changed list rebuilds only that environment.
#
# Environment:
#   PYTHON            interpreter to build venvs from (default: python3)
#   KT_LAUNCH_VENVS   where to put them (default: <repo>/.cache/venvs)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
base="${KT_LAUNCH_VENVS:-$repo/.cache/venvs}"
python="${PYTHON:-python3}"

pyver="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
pip_flags=(--quiet --disable-pip-version-check --no-input --no-deps)

log() { printf '[setup_venvs] %s\n' "$*" >&2; }

key_of() { # key_of LOCKFILE -> stamp text
    local sum
    sum="$(sha256sum "$1" | cut -c1-16)"
    printf 'python=%s lock=%s:%s\n' "$pyver" "$(basename "$1")" "$sum"
}

fresh() { # fresh DIR KEY -> 0 if DIR's stamp equals KEY
    [[ -f "$1/.kt-launch-stamp" ]] && [[ "$(cat "$1/.kt-launch-stamp")" == "$2" ]]
}

# pip writes warnings about the machine's extra index into stderr; keep them
# out of the log unless pip fails.
quiet_pip() { # quiet_pip PIP_CMD...
    local err
    err="$(mktemp)"
    if ! "$@" 2>"$err"; then
        cat "$err" >&2
        rm -f "$err"
        return 1
    fi
    grep -v -e '^WARNING: Location' -e 'dependency conflicts' -e 'requires .*, which is not installed' \
        -e 'but you have .* which is incompatible' -e "dependency resolver does not" -e '^WARNING: Running pip as' \
        "$err" >&2 || true
    rm -f "$err"
}

mkdir -p "$base"
start=$SECONDS

# One builder at a time (make test and a pytest run may start this together).
exec 9>"$base/.setup.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

# pip --target unpacks into a temporary folder and then moves it into place: keep that folder beside the target, on
# the same file system, so the move is a rename and the 5.5 GB of torch is never held twice (nor in a small /tmp).
export TMPDIR="$base/.tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"

# ---- shared torch -----------------------------------------------------------
torch_lock="$here/requirements-torch.txt"
torch_key="$(key_of "$torch_lock")"
torch_dir="$base/_torch-$(sha256sum "$torch_lock" | cut -c1-12)"
if fresh "$torch_dir" "$torch_key"; then
    log "torch: up to date ($torch_dir)"
else
    log "torch: installing into $torch_dir (a few GB from the local wheel store; about a minute or two)"
    rm -rf "$torch_dir" "$torch_dir.tmp"
    quiet_pip "$python" -m pip install "${pip_flags[@]}" --target "$torch_dir.tmp" -r "$torch_lock"
    mv "$torch_dir.tmp" "$torch_dir"
    printf '%s' "$torch_key" >"$torch_dir/.kt-launch-stamp"
    # An older pinned set is several GB of disk nobody uses any more.
    for old in "$base"/_torch-*; do
        if [[ -d "$old" && "$old" != "$torch_dir" ]]; then
            rm -rf "$old"
        fi
    done
fi

# ---- the two venvs ----------------------------------------------------------
build_venv() { # build_venv NAME LOCKFILE
    local name="$1" lock="$2" dir="$base/$1" key site
    key="$(key_of "$lock") torch=$(basename "$torch_dir")"
    if fresh "$dir" "$key" && [[ -x "$dir/bin/python" ]]; then
        log "$name: up to date ($dir)"
        return 0
    fi
    log "$name: building $dir"
    rm -rf "$dir"
    "$python" -m venv "$dir"
    site="$("$dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    printf '%s\n' "$torch_dir" >"$site/_kt_launch_shared_torch.pth"
    quiet_pip "$dir/bin/python" -m pip install "${pip_flags[@]}" -r "$lock"
    # Prove the parser builds before stamping, so a broken env is rebuilt next time.
    local err
    err="$(mktemp)"
    if ! "$dir/bin/python" - 2>"$err" <<'PYEOF'
import argparse
from sglang.srt.server_args import ServerArgs
parser = argparse.ArgumentParser()
ServerArgs.add_cli_args(parser)
assert len(parser._actions) > 100, len(parser._actions)
PYEOF
    then
        tail -n 30 "$err" >&2
        rm -f "$err"
        log "$name: sglang.srt.server_args does not import; see above"
        return 1
    fi
    rm -f "$err"
    printf '%s' "$key" >"$dir/.kt-launch-stamp"
}

build_venv sglang-kt "$here/requirements-sglang-kt.txt"
build_venv sglang "$here/requirements-sglang.txt"
rm -rf "$TMPDIR"
log "done in $((SECONDS - start)) s"
