"""kt-launch's copies of SGLang's memory formulas against sglang-kt 0.7.2's own code, run in the contract venv."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from kt_launch.resolve.memory import default_mem_fraction, sglang_gpu_defaults

VENV = Path(os.environ.get("KT_LAUNCH_VENVS") or Path(__file__).resolve().parents[2] / ".cache" / "venvs")
PYTHON = VENV / "sglang-kt" / "bin" / "python"
# (nvidia-smi memory.total MiB, tp, chunked_prefill_size): RTX 4090 24 GB, L20 / 4090 48 GB, H100, H200, B200
CASES = [(24564, 1, None), (24564, 8, None), (46068, 1, None), (49140, 4, None), (49140, 2, 65536),
         (81559, 1, None), (143771, 1, None), (143771, 8, 4096), (183359, 1, None), (16384, 1, -1)]

# Calls ServerArgs._handle_gpu_memory_settings (server_args.py:1263) on a bare object carrying the fields it reads.
PROBE = r"""
import json, sys
from sglang.srt.server_args import ServerArgs
out = []
for gpu_mem, tp, chunk in json.loads(sys.argv[1]):
    s = type("S", (), {})()
    for k in ("cuda_graph_max_bs", "cuda_graph_bs", "piecewise_cuda_graph_max_tokens", "piecewise_cuda_graph_tokens",
              "mem_fraction_static"):
        setattr(s, k, None)
    s.chunked_prefill_size, s.tp_size, s.pp_size, s.dp_size = chunk, tp, 1, 1
    s.enable_dp_attention = s.enable_piecewise_cuda_graph = s.enable_symm_mem = s.language_only = False
    s.disable_cuda_graph_padding, s.speculative_algorithm, s.max_prefill_tokens = False, None, 16384
    s._generate_cuda_graph_batch_sizes = lambda: [1]
    s._generate_piecewise_cuda_graph_tokens = lambda: [1]
    s.use_mla_backend = lambda: True
    s.get_model_config = lambda: type("M", (), {"is_multimodal": False})()
    ServerArgs._handle_gpu_memory_settings(s, gpu_mem)
    out.append([s.mem_fraction_static, s.chunked_prefill_size, s.cuda_graph_max_bs])
print(json.dumps(out))
"""


def ours(gpu_mem, tp, chunk):
    c, bs = sglang_gpu_defaults(gpu_mem, tp)
    chunk = c if chunk is None else chunk
    return [default_mem_fraction(gpu_mem, tp, chunk, bs), chunk, bs]


@pytest.mark.skipif(not PYTHON.exists(), reason="the sglang-kt contract venv is not built (make test builds it)")
def test_mem_fraction_default_matches_sglang_kt():
    proc = subprocess.run([str(PYTHON), "-c", PROBE, json.dumps(CASES)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [ours(*c) for c in CASES] == theirs


def test_mem_fraction_default_by_hand():
    # H200 at TP 1: 512 + 8192 * 1.5 + 256 * 2 + 1/8 * 1024 = 13440 MiB reserved (> the 10 GiB floor)
    assert ours(143771, 1, None) == [round((143771 - 13440) / 143771, 3), 8192, 256]
    # 24 GB at TP 8: 512 + 2048 * 1.5 + 80 * 2 + 1024 = 4768 MiB
    assert ours(24564, 8, None) == [round((24564 - 4768) / 24564, 3), 2048, 80]
