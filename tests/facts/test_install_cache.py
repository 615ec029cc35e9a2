"""The install gate's cache (facts/install.py) with a real worker run in a real interpreter (kt-launch's own, which
has neither SGLang nor kt-kernel: the run is quick and imports nothing heavy)."""

from __future__ import annotations

import os
import subprocess
import sys

from kt_launch.facts.install import WORKER, _entry_path, cached_install_facts, read_install_facts, server_env


def _spy(monkeypatch) -> list:
    seen = []
    real = subprocess.Popen

    def spy(argv, *a, **k):
        if isinstance(argv, (list, tuple)) and str(WORKER) in map(str, argv):
            seen.append(argv)
        return real(argv, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", spy)
    return seen


def test_cold_then_warm_then_a_new_distribution_is_judged_again(tmp_path, monkeypatch):
    extra = tmp_path / "extra"
    extra.mkdir()
    env = {**os.environ, "PYTHONPATH": str(extra)}
    runs = _spy(monkeypatch)
    first = read_install_facts(sys.executable, cache_dir=tmp_path / "c", env=env)
    assert first.judged and not first.from_cache and first.imports == () and len(runs) == 1
    assert read_install_facts(sys.executable, cache_dir=tmp_path / "c", env=env).from_cache and len(runs) == 1
    (extra / "newpkg-1.0.dist-info").mkdir()  # an install into a folder of its sys.path
    assert cached_install_facts(sys.executable, cache_dir=tmp_path / "c", env=env) is None
    assert not read_install_facts(sys.executable, cache_dir=tmp_path / "c", env=env).from_cache and len(runs) == 2


def test_an_unusable_cache_entry_is_a_miss_never_a_crash(tmp_path, capsys):
    env = dict(os.environ)
    read_install_facts(sys.executable, cache_dir=tmp_path, env=env)
    entry = _entry_path(tmp_path, os.path.abspath(sys.executable), env)
    for bad in ("{not json", '{"schema": 1, "python": 3}', '{"schema": 1, "python": "%s", "answer": {"ok": true, '
                '"unmet": "x"}, "stamps": {}}' % os.path.abspath(sys.executable), "1e400", "[]"):
        entry.write_text(bad)
        assert cached_install_facts(sys.executable, cache_dir=tmp_path, env=env) is None
    fresh = read_install_facts(sys.executable, cache_dir=tmp_path, env=env)  # rewrites it
    assert fresh.judged and cached_install_facts(sys.executable, cache_dir=tmp_path, env=env) is not None


def test_a_missing_interpreter_is_not_judged_with_the_reason(tmp_path):
    facts = read_install_facts("/nonexistent/python", cache_dir=tmp_path)
    assert not facts.judged and facts.failed and "/nonexistent/python" in facts.why_not


def test_the_gate_imports_with_the_servers_variant_and_caches_per_variant(tmp_path):
    env = server_env({"PATH": "/bin"}, {"KT_KERNEL_CPU_VARIANT": "avx2", "OMP_NUM_THREADS": "4", "PYTHONPATH": "a\0b"})
    assert env == {"PATH": "/bin", "KT_KERNEL_CPU_VARIANT": "avx2"}  # what picks the extension; never a NUL
    py = os.path.abspath(sys.executable)
    assert _entry_path(tmp_path, py, env) != _entry_path(tmp_path, py, {**env, "KT_KERNEL_CPU_VARIANT": "amx"})
