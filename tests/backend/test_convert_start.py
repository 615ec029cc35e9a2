"""`kt-launch convert` refuses before it starts (issue 26): an interpreter without torch or kt-kernel, one that does
not exist, too little RAM for the worker's bound; `--method`; the progress bar on a terminal, lines elsewhere.

The interpreter checks run real interpreters: the launcher's own (no torch, no kt-kernel) and the backend venv's
(the real kt-kernel 0.7.2). Where a check must pass, the run goes on to the worker, which on this AVX2 CPU refuses
the AMX methods by name (KT-E402): that proves the check let it through and which method reached the worker.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from devtools import synthetic
from kt_launch.backend import convert as cv

from backend.test_convert import SHAPE, kt, model, profile


def _files_under(p: Path) -> list[str]:
    return sorted(str(x.relative_to(p)) for x in p.rglob("*")) if p.exists() else []


def test_an_interpreter_without_torch_is_refused_before_anything_is_written(tmp_path):
    """The launcher's interpreter has neither torch nor kt-kernel. Before: convert started, then said "the conversion
    failed ... a rerun resumes". Now: exit 3, KT-E450, the exact pip line for that interpreter, nothing written."""
    src = synthetic.hf_model(tmp_path / "model", SHAPE)
    out = tmp_path / "out"
    r = kt("convert", "--profile", profile(tmp_path, src, out), "--python", sys.executable, timeout=300)
    text = " ".join(r.stderr.split())
    assert r.returncode == 3 and "KT-E450" in text, (r.returncode, r.stderr[-1500:])
    assert f"{sys.executable} -m pip install kt-kernel==0.7.2" in text  # core/install.py's pin, for that interpreter
    assert "--python" in text and "torch" in text
    assert "rerun resumes" not in text and "Traceback" not in text
    assert not out.exists()


def test_an_interpreter_that_does_not_exist_is_refused_by_name(tmp_path):
    src = synthetic.hf_model(tmp_path / "model", SHAPE)
    out = tmp_path / "out"
    missing = tmp_path / "no-such-python"
    r = kt("convert", "--profile", profile(tmp_path, src, out), "--python", missing, "--json", timeout=300)
    assert r.returncode == 3, r.stderr[-1500:]
    assert "KT-E450" in r.stdout and str(missing) in r.stdout and "--python" in " ".join(r.stderr.split())
    assert not out.exists()


def test_kt_kernel_present_but_torch_missing_names_kt_kernels_own_torch_pin(tmp_path, monkeypatch):
    """The fix line for a broken install names the torch requirement kt-kernel's metadata declares."""
    from kt_launch.facts import worker

    def fake(python, script, stdin=None, env=None, timeout_s=0, **kw):
        return worker.WorkerResult({"ok": True, "torch": None, "kt_kernel": "0.7.2", "safetensors": "0.6.2",
                                    "kt_kernel_requires_torch": "torch==2.9.1"})

    monkeypatch.setattr(cv._worker, "run_worker", fake)
    f = cv.interpreter_refusal("/opt/py/bin/python")
    assert f is not None and f.code == "KT-E450"
    assert "/opt/py/bin/python -m pip install torch==2.9.1" in f.fix and "torch is not installed" in f.message


def test_the_backend_interpreter_passes_the_check(backend_python):
    assert cv.interpreter_refusal(backend_python) is None


def test_too_little_ram_for_the_bound_is_refused():
    cp = cv.ConvertPlan("/m/model", "/m/out", "AMXINT8", 1, 1, None, (1, 2), 64, 6, 2048, 1408)
    bf16 = 64 * 3 * 2048 * 1408 * 2  # DeepSeek-V2-Lite: 1.1 GB of BF16 experts a layer
    # kt-kernel 0.7.2 frees no quantized layer before the process ends: both layers' buffers, plus its quantizer's
    # scratch of two INT8-sized layers
    assert cp.ram_bytes == (3 * bf16 + 2 * cp.layer_bytes_out + 2 * bf16 // 2 + 3 * 2048 * 1408 * 4
                            + cv.WORKER_BASE_RAM)
    f = cv.ram_refusal(cp, cp.ram_bytes - 1)
    assert f is not None and f.code == "KT-E451" and "3 layers" in f.message
    assert cv.ram_refusal(cp, cp.ram_bytes) is None and cv.ram_refusal(cp, None) is None
    assert f"{cp.ram_bytes / 1e9:.2f} GB of RAM at most (3 layers in flight)" in cv.start_line(cp, "py")


def test_prepare_refuses_too_little_ram_before_starting(tmp_path):
    src = synthetic.hf_model(tmp_path / "model", SHAPE)
    cp = cv.ConvertPlan(str(src), str(tmp_path / "out"), "AMXINT8", 1, 1, None, (1, 2), 8, 2, 256, 256)
    got = cv.prepare(cp, python=str(tmp_path / "never-run"), available_ram=1000)
    assert [f.code for f in got.findings] == ["KT-E451"]


@pytest.mark.parametrize("method", ["AMXINT4", "AMXINT8"])
def test_method_option_picks_the_format(backend_python, kt_kernel, tmp_path, method):
    """--method overrides the plan's kt.method (here BF16, which convert would refuse). On a CPU whose variant lacks
    the method the worker refuses it by that name (KT-E402); elsewhere the files are written in that format."""
    src = model(tmp_path / "model")
    out = tmp_path / "out"
    r = kt("convert", "--profile", profile(tmp_path, src, out, "BF16", 1, backend_python), "--method", method,
           "--json", env={"KT_KERNEL_CPU_VARIANT": kt_kernel.variant})
    if not kt_kernel.implements(method):
        assert r.returncode == 3 and "KT-E402" in r.stdout and method in r.stdout, r.stderr[-1500:]
        assert not out.exists() or not any(out.glob("_layer_*"))
        return
    assert r.returncode == 0, r.stderr[-2000:]
    bits = "INT4" if method == "AMXINT4" else "INT8"
    assert any(p.name.startswith(bits + "_") for p in out.rglob("*.kt"))


def test_method_option_is_an_exact_choice(tmp_path):
    src = synthetic.hf_model(tmp_path / "model", SHAPE)
    r = kt("convert", "--profile", profile(tmp_path, src, tmp_path / "out"), "--method", "int4", timeout=120)
    assert r.returncode == 2 and "--method" in r.stderr and not (tmp_path / "out").exists()


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    ticks = iter([0.0, 2.0, 4.0])
    recs = [{"index": 1, "total": 2, "layer": 1, "bytes_in": 3 * 10**9, "read_s": 1.5, "quant_s": 0.5, "seconds": 2},
            {"index": 2, "total": 2, "layer": 2, "bytes_in": 3 * 10**9, "read_s": 1.5, "quant_s": 0.5, "seconds": 2}]
    tty = io.StringIO()
    p = cv.Progress(tty, tty=True, clock=lambda: next(ticks))
    p(recs[0])
    assert tty.getvalue().startswith("\r[############............] 1/2 layers, layer 1, 1.50 GB/s, about 2 s left")
    p(recs[1])
    p.close()
    assert "2/2 layers, layer 2, 1.50 GB/s, done" in tty.getvalue() and tty.getvalue().endswith("\n")
    ticks = iter([0.0, 2.0, 4.0])
    pipe = io.StringIO()
    p = cv.Progress(pipe, tty=False, clock=lambda: next(ticks))
    p(recs[0])
    p(recs[1])
    p.close()
    lines = pipe.getvalue().splitlines()
    assert lines == [cv.progress_line(recs[0], 2.0), cv.progress_line(recs[1], 4.0)] and "\r" not in pipe.getvalue()
