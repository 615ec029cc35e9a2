#!/usr/bin/env bash
# kt-kernel 0.7.2's `kt` CLI beside the real sglang-kt 0.7.2 (the contract-test venv), to time
# `kt run --dry-run` next to kt-launch (bench/dryrun_bench.py). `kt run` refuses to plan without an
# SGLang that has kt flags, so it must live where sglang-kt is. kt-kernel does not declare all it
# imports (typer's click, requests: shared/reference/kt-kernel-0.7.2.md §0): install them by name.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/contract/setup_venvs.sh
V=.cache/venvs/sglang-kt
$V/bin/python -c "import typer, rich, click, httpx, requests, gguf" 2>/dev/null && exit 0
$V/bin/python -m pip install -q --no-deps typer shellingham rich markdown-it-py mdurl pygments httpx httpcore h11 \
  anyio sniffio certifi idna click requests urllib3 charset-normalizer gguf==0.19.0
