#!/usr/bin/env bash
# Backend test environment: a venv with the real kt-kernel 0.7.2 and a CPU build of torch, used by
# tests/backend as the probe's *target interpreter* (the launcher's own venv never gets torch).
#
#   tests/backend/setup_env.sh            # idempotent; about 1 s when already set up
#   KT_BACKEND_VENV=/path tests/backend/setup_env.sh
#
# Why these pieces: kt-kernel's extension does not link libtorch (readelf: only libnuma, libgomp,
# libhwloc, libstdc++), so any recent torch works although the wheel pins torch==2.9.1; installing
# kt-kernel with its declared deps would pull CUDA torch, triton and the CLI's deps (typer, rich,
# httpx). What `import kt_kernel` and the SFT wrapper really need: torch, numpy, safetensors,
# packaging (sft), and gguf (imported by utils/loader.py), which needs pyyaml.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${KT_BACKEND_VENV:-$ROOT/.cache/backend-venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${KT_BACKEND_TORCH:-torch==2.13.0+cpu}"
TORCH_INDEX="${KT_BACKEND_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
WANT="v1 kt-kernel==0.7.2 gguf==0.19.0 ${TORCH_SPEC}"
STAMP="$VENV/.kt-backend-ready"

# One builder per venv at a time: `make test` starts this in the background and each pytest worker's
# fixture runs it too; the others wait here, then find the stamp fresh. The lock lives in /tmp, not
# beside a venv that may be shared (KT_BACKEND_VENV).
exec 9>"${TMPDIR:-/tmp}/kt-launch-setup-$(printf %s "$VENV" | sha256sum | cut -c1-16).lock"
if command -v flock >/dev/null 2>&1; then
  flock 9
fi

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "backend test env ready: $VENV"
  exit 0
fi

start=$(date +%s)
rm -f "$STAMP"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# 1. torch, CPU build (PyPI's torch wheel drags in ~3 GB of CUDA libraries). First from what pip is
#    configured with (a local wheel dir, a mirror); else from the PyTorch CPU index, PyPI for its deps.
#    Last resort: the plain PyPI wheel of the same version (large, but it works on a CPU-only host).
if ! "${PIP[@]}" install --retries 1 --timeout 60 "$TORCH_SPEC" 2>/dev/null; then
  if ! "${PIP[@]}" install --retries 2 --timeout 60 --index-url "$TORCH_INDEX" \
      --extra-index-url https://pypi.org/simple "$TORCH_SPEC"; then
    "${PIP[@]}" install "${TORCH_SPEC%+cpu}"
  fi
fi
# 2. the runtime deps kt_kernel actually imports
"${PIP[@]}" install "numpy>=1.24" "safetensors>=0.4" "pyyaml>=5.1" "packaging>=23"
# 3. kt-kernel and gguf without their declared deps (see above)
"${PIP[@]}" install --no-deps "kt-kernel==0.7.2" "gguf==0.19.0"

# Smoke: the extension loads and reports its CPU variant.
"$VENV/bin/python" - <<'PY'
import kt_kernel, torch
print(f"kt_kernel {getattr(kt_kernel, '__version__', '?')} variant={kt_kernel.__cpu_variant__} torch={torch.__version__}")
PY
echo "$WANT" > "$STAMP"
echo "backend test env built in $(( $(date +%s) - start )) s: $VENV"
