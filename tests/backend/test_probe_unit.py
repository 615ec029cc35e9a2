"""run_probe's process handling and probe_findings, without kt-kernel (fake interpreters)."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap

from kt_launch.backend.probe import (CRASHED, INVALID_CONFIG, NO_INTERPRETER, NO_RESULT, TIMEOUT, TORCH_MISSING,
                                     ProbeSpec, probe_findings, run_probe, spec_from_plan)
from procs import state_after_kill

SPEC = ProbeSpec(method="AMXINT8", cpuinfer=2, threadpool_count=1, hidden_size=64, moe_intermediate_size=64,
                 num_experts=4, top_k=2, chunked_prefill_size=16)


def _script(tmp_path, body, name="fakepy"):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def codes(r):
    return [f.code for f in probe_findings(r)]


def test_launcher_modules_never_import_torch_or_kt_kernel():
    code = ("import sys, kt_launch.backend.probe, kt_launch.backend.tune; "
            "bad=[m for m in ('torch','kt_kernel','numpy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_invalid_spec_is_refused_before_starting_a_process(tmp_path):
    marker = tmp_path / "ran"
    py = _script(tmp_path, f"touch {marker}\n")
    for bad in (dict(cpuinfer=0), dict(threadpool_count=3, cpuinfer=2), dict(numa_nodes=(0, 1)),
                dict(chunked_prefill_size=-1), dict(top_k=9)):
        r = run_probe(ProbeSpec(**{**SPEC.to_json(), **bad}), py, 10)
        assert r.error_kind == INVALID_CONFIG and "KT-E404" in codes(r), bad
    assert not marker.exists()


def test_missing_interpreter(tmp_path):
    r = run_probe(SPEC, str(tmp_path / "nope" / "python"), 10)
    assert r.error_kind == NO_INTERPRETER and not r.passed and codes(r) == ["KT-E409"]


def test_interpreter_without_torch_gives_a_finding_not_a_traceback():
    # the launcher's own venv has no torch (project rule), so it is a real "wrong interpreter"
    r = run_probe(SPEC, sys.executable, 60)
    assert r.error_kind == TORCH_MISSING, r
    assert "KT-E401" in codes(r) and sys.executable in r.error


def test_crash_by_signal_is_reported(tmp_path):
    py = _script(tmp_path, "cat >/dev/null; echo oops >&2; kill -ILL $$\n")
    r = run_probe(SPEC, py, 10)
    assert r.error_kind == CRASHED and "SIGILL" in r.error and "oops" in r.stderr_tail
    assert "KT-E406" in codes(r)


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    py = _script(tmp_path, f"sleep 60 & echo $! > {pidfile}; wait\n")
    r = run_probe(SPEC, py, 1.0)
    assert r.error_kind == TIMEOUT and "KT-E407" in codes(r)
    pid = int(pidfile.read_text())
    state = state_after_kill(pid)
    assert state in ("Z", "X", "gone"), state


def test_noise_on_stdout_and_no_json(tmp_path):
    py = _script(tmp_path, "cat >/dev/null; echo 'hello from C++'; exit 3\n")
    r = run_probe(SPEC, py, 10)
    assert r.error_kind == NO_RESULT and "status 3" in r.error and "KT-E408" in codes(r)


def test_result_line_is_found_after_noise(tmp_path):
    py = _script(tmp_path, """cat >/dev/null; echo 'noise {'; echo '{"ok": true, "passed": true, "cpu_variant": "amx", "kt_kernel_version": "0.7.2", "decode": {"median_s": 0.001, "tokens_per_s": 1000.0, "output_device": "cpu", "times_s": [0.001]}, "rel_err": 0.01, "tolerance": 0.06, "output_device": "cpu", "notes": []}'
""")
    r = run_probe(SPEC, py, 10)
    assert r.ok and r.passed and r.decode_tokens_per_s == 1000.0 and r.cpu_variant == "amx"
    assert codes(r) == ["KT-I401"]
    assert r.to_json()["decode_times_s"] == [0.001]


class _Plan:
    def __init__(self, values):
        self.values = values

    def get(self, key, default=None):
        return self.values.get(key, default)


class _Model:
    hidden_size, moe_intermediate_size, num_experts, top_k, moe_layers = 2048, 1408, 64, 6, (1, 2, 3)


def test_spec_from_plan_inference_and_moe_lora():
    p = _Plan({"kt.method": "AMXINT8", "kt.cpuinfer": 14, "kt.threadpool_count": 1, "kt.numa_nodes": [0],
               "server.chunked_prefill_size": 4096, "kt.weight_path": "/w"})
    s = spec_from_plan(p, _Model())
    assert (s.method, s.cpuinfer, s.threadpool_count, s.numa_nodes, s.chunked_prefill_size) == ("AMXINT8", 14, 1, (0,), 4096)
    assert (s.hidden_size, s.num_experts, s.top_k) == (2048, 64, 6) and s.weight_path is None
    s2 = spec_from_plan(p, _Model(), use_weights=True)
    assert s2.weight_path == "/w" and s2.layer_idx == 1  # first MoE layer of the checkpoint
    lora = _Plan({**p.values, "moe_lora.sft_method": "AMXBF16_SFT", "moe_lora.rank": 8, "moe_lora.alpha": 16.0,
                  "model.path": "/m"})
    s3 = spec_from_plan(lora, _Model(), use_weights=True)
    assert (s3.method, s3.lora_rank, s3.lora_alpha, s3.weight_path, s3.sft) == ("AMXBF16_SFT", 8, 16.0, "/m", True)


def test_probe_sizes_kt_kernel_as_the_launched_server(tmp_path):
    """Unset chunked_prefill_size: the probe uses SGLang's own default for the plan's GPUs (the plan's value),
    not a constant of its own; set, the user's."""
    from pathlib import Path

    from devtools import synthetic
    from kt_launch.app import Request, plan_request
    from kt_launch.resolve.memory import sglang_gpu_defaults

    repo = Path(__file__).resolve().parents[2]
    synthetic.demo(tmp_path / "t")
    prof = tmp_path / "p.yaml"
    prof.write_text((repo / "configs" / "demo.yaml").read_text().replace("demo/", f"{tmp_path}/t/"))
    host = str(repo / "tests" / "data" / "hosts" / "l20_1x.json")  # 48 GB: SGLang's default chunk is 4096
    out = plan_request(Request(profile=str(prof), host_facts=host))
    chunk = out.plan.memory.chunked_prefill_size
    assert chunk == 4096
    assert chunk == sglang_gpu_defaults(out.host.gpus[0].memory_bytes / (1 << 20), 1)[0]
    assert spec_from_plan(out.plan, out.model).chunked_prefill_size == chunk
    out = plan_request(Request(profile=str(prof), host_facts=host, sets=("server.chunked_prefill_size=1024",)))
    assert spec_from_plan(out.plan, out.model).chunked_prefill_size == 1024
