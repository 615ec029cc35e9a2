"""SglangFacts: the worker protocol, the on-disk cache and every error path.

The target interpreter here is a real, tiny venv (``python -m venv --without-pip``) holding a
*fake* ``sglang`` package with a small ``ServerArgs.add_cli_args``: enough for the cache logic
and error paths, which do not depend on what SGLang's parser contains. What the real parsers
contain is checked in tests/contract/test_real_parsers.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import kt_launch.facts.sglang as sf
from kt_launch.facts.sglang import (
    OptionInfo,
    SglangFacts,
    SglangParseError,
    SglangWorkerError,
    clear_sglang_facts_cache,
    load_sglang_facts_file,
    parse_many_with_real_parser,
    parse_with_real_parser,
    read_sglang_facts,
)

SERVER_ARGS_OK = '''
import argparse, enum, math

class Mode(enum.Enum):
    A = "a"

class Weird:
    def __repr__(self):
        return "Weird()"

def nullable_str(v):
    return None if v in ("None", "") else v

class ServerArgs:
    @staticmethod
    def add_cli_args(parser):
        parser.add_argument("--model-path", "--model", type=str, required=True, help="model " * 100)
        parser.add_argument("--kt-method", type=str, default="AMXINT4")
        parser.add_argument("--kt-threadpool-count", type=int, default=2)
        parser.add_argument("--kt-numa-nodes", type=int, nargs="+", default=None)
        parser.add_argument("--kt-expert-placement-strategy", type=str, default="uniform",
                            choices=["frequency", "front-loading", "uniform", "random"])
        parser.add_argument("--disable-cuda-graph", action="store_true")
        parser.add_argument("--tp-size", "--tensor-parallel-size", dest="tensor_parallel_size", type=int, default=1)
        parser.add_argument("--served-model-name", type=nullable_str, default=None)
        parser.add_argument("--weird", default=Weird())
        parser.add_argument("--inf", type=float, default=math.inf)
        parser.add_argument("--mode", default=Mode.A)
        parser.add_argument("--pair", nargs=2, default=(1, 2))
'''

EXPERTS_NEW = '''
class KTMoEWrapper:
    def __new__(cls, layer_idx, num_experts, gpu_experts_mask, cpuinfer_threads, method="AMXINT4",
                num_gpu_experts=0, **kw):
        raise RuntimeError("never called by the worker")
'''

EXPERTS_OLD = '''
class KTMoEWrapper:
    def __init__(self, layer_idx, num_experts, num_gpu_experts, cpuinfer_threads, method="AMXINT4"):
        raise RuntimeError("never called by the worker")
'''

CALL_SITE = '''
from kt_kernel import KTMoEWrapper
def build(n):
    return KTMoEWrapper(layer_idx=0, num_experts=8, num_gpu_experts=n, cpuinfer_threads=4)
'''


class FakeEnv:
    """A venv whose site-packages we write by hand."""

    def __init__(self, root: Path):
        self.root = root
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        self.python = str(root / "bin" / "python")
        self.site = Path(
            subprocess.run(
                [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )

    def install_sglang(self, dist="sglang-kt", version="0.7.2", server_args=SERVER_ARGS_OK, call_site=None):
        pkg = self.site / "sglang"
        (pkg / "srt" / "layers" / "moe").mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "srt" / "__init__.py").write_text("")
        (pkg / "srt" / "server_args.py").write_text(textwrap.dedent(server_args))
        if call_site is not None:
            (pkg / "srt" / "layers" / "__init__.py").write_text("")
            (pkg / "srt" / "layers" / "moe" / "__init__.py").write_text("")
            (pkg / "srt" / "layers" / "moe" / "kt_ep_wrapper.py").write_text(call_site)
        self.write_dist(dist, version, "sglang")
        return self

    def write_dist(self, dist, version, top):
        info = self.site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "top_level.txt").write_text(top + "\n")
        (info / "RECORD").write_text(f"{top}/__init__.py,,\n")
        return info

    def remove_dist(self, dist, version):
        import shutil

        shutil.rmtree(self.site / f"{dist.replace('-', '_')}-{version}.dist-info")

    def install_kt_kernel(self, version="0.7.2", experts=EXPERTS_NEW):
        pkg = self.site / "kt_kernel"
        pkg.mkdir(exist_ok=True)
        # An __init__ that would explode if imported: the worker must only read the source.
        (pkg / "__init__.py").write_text("raise SystemExit('kt_kernel must not be imported')\n")
        (pkg / "experts.py").write_text(experts)
        self.write_dist("kt-kernel", version, "kt_kernel")
        return self


@pytest.fixture()
def env(tmp_path) -> FakeEnv:
    return FakeEnv(tmp_path / "venv")


@pytest.fixture()
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture()
def no_subprocess(monkeypatch):
    """Make any subprocess start fail, to prove a warm hit starts none."""

    def boom(*a, **k):
        raise AssertionError("a warm cache hit must not start a process")

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(subprocess, "Popen", boom)


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


# -- the facts themselves -------------------------------------------------------------------


def test_facts_from_fake_sglang(env, cache):
    env.install_sglang().install_kt_kernel()
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.ok, f.error
    assert (f.distribution, f.version, f.kt_kernel_version) == ("sglang-kt", "0.7.2", "0.7.2")
    assert f.kt_wants_gpu_experts_mask is True and f.kt_gpu_experts_mask_required is True
    assert f.kt_wrapper_params[:3] == ("layer_idx", "num_experts", "gpu_experts_mask")
    assert f.kt_wrapper_call_compatible is None  # no call site in this fake
    # The worker ran the fake package, not kt_launch/facts/sglang.py beside it.
    assert f.sglang_path == str(env.site / "sglang")
    assert not f.from_cache and f.seconds is not None

    mp = f.option("--model-path")
    assert f.option("--model") is mp
    assert mp.required and mp.dest == "model_path" and mp.type == "str"
    assert len(mp.help) == 200
    assert f.option("--tp-size").dest == "tensor_parallel_size"
    assert f.by_dest["tensor_parallel_size"].flag == "--tp-size"
    numa = f.option("--kt-numa-nodes")
    assert (numa.nargs, numa.type, numa.is_list) == ("+", "int", True)
    dcg = f.option("--disable-cuda-graph")
    assert (dcg.action, dcg.default, dcg.takes_value) == ("_StoreTrueAction", False, False)
    assert f.option("--kt-expert-placement-strategy").choices == ("frequency", "front-loading", "uniform", "random")
    assert f.option("--served-model-name").type == "nullable_str"
    # Defaults that are not JSON come back as tagged reprs, never a crash.
    assert f.option("--weird").default == {"__repr__": "Weird()", "__type__": "Weird"}
    assert f.option("--inf").default == {"__repr__": "inf", "__type__": "float"}
    assert f.option("--mode").default == "a"
    assert f.option("--pair").default == [1, 2]
    assert f.has_flag("--help") and not f.has_flag("--kt-gpu-experts-ratio")
    assert f.option("--nope") is None
    assert "sglang-kt 0.7.2, kt-kernel 0.7.2" in f.describe()


def test_old_kt_kernel_signature_and_incompatible_call_site(env, cache):
    env.install_sglang(dist="sglang", version="0.5.23", call_site=CALL_SITE).install_kt_kernel(experts=EXPERTS_NEW)
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.distribution == "sglang"
    assert f.kt_wrapper_call_compatible is False
    assert f.kt_wrapper_call_missing == ("gpu_experts_mask",)

    env2 = FakeEnv(env.root.parent / "venv2")
    env2.install_sglang(dist="sglang", version="0.5.23", call_site=CALL_SITE).install_kt_kernel("0.4.0", EXPERTS_OLD)
    g = read_sglang_facts(env2.python, cache_dir=cache)
    assert g.kt_kernel_version == "0.4.0"
    assert g.kt_wants_gpu_experts_mask is False and g.kt_gpu_experts_mask_required is False
    assert g.kt_wrapper_call_compatible is True


def test_no_kt_kernel(env, cache):
    env.install_sglang()
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.ok and f.kt_kernel_version is None and f.kt_wants_gpu_experts_mask is None
    assert "no kt-kernel" in f.describe()


def test_two_distributions_owning_sglang_warn(env, cache):
    env.install_sglang(dist="sglang", version="0.5.23")
    env.write_dist("sglang-kt", "0.7.2", "sglang")
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.ok
    assert f.distribution in ("sglang", "sglang-kt")
    assert any("several distributions" in w for w in f.warnings)


# -- the cache ------------------------------------------------------------------------------


def test_warm_hit_starts_no_process(env, cache, monkeypatch):
    env.install_sglang().install_kt_kernel()
    cold = read_sglang_facts(env.python, cache_dir=cache)
    assert not cold.from_cache
    assert len(list(cache.glob("facts-*.json"))) == 1

    def boom(*a, **k):
        raise AssertionError("a warm cache hit must not start a process")

    monkeypatch.setattr(subprocess, "Popen", boom)  # the worker client starts processes with Popen
    warm = read_sglang_facts(env.python, cache_dir=cache)
    assert warm.from_cache and warm == cold


def test_xdg_cache_home_is_the_default(env, tmp_path, monkeypatch):
    env.install_sglang()
    monkeypatch.delenv("KT_LAUNCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    read_sglang_facts(env.python)
    assert list((tmp_path / "xdg" / "kt-launch" / "sglang").glob("facts-*.json"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    read_sglang_facts(env.python)
    assert list((tmp_path / "home" / ".cache" / "kt-launch" / "sglang").glob("facts-*.json"))
    assert clear_sglang_facts_cache() == 1


@pytest.mark.parametrize(
    "change",
    ["touch_init", "upgrade_dist", "add_kt_kernel", "touch_experts", "new_worker", "remove_sglang_adds_error"],
)
def test_cache_invalidation(env, cache, monkeypatch, change):
    env.install_sglang()
    if change == "touch_experts":
        env.install_kt_kernel()
    first = read_sglang_facts(env.python, cache_dir=cache)
    assert first.ok and read_sglang_facts(env.python, cache_dir=cache).from_cache

    if change == "touch_init":
        _bump_mtime(env.site / "sglang" / "__init__.py")
    elif change == "upgrade_dist":
        env.remove_dist("sglang-kt", "0.7.2")
        env.write_dist("sglang-kt", "0.7.3", "sglang")
    elif change == "add_kt_kernel":
        env.install_kt_kernel()
    elif change == "touch_experts":
        (env.site / "kt_kernel" / "experts.py").write_text(EXPERTS_OLD)
    elif change == "new_worker":
        monkeypatch.setattr(sf, "_worker_sha_memo", "0" * 16)
    elif change == "remove_sglang_adds_error":
        import shutil

        shutil.rmtree(env.site / "sglang")

    after = read_sglang_facts(env.python, cache_dir=cache)
    assert not after.from_cache
    if change == "upgrade_dist":
        assert after.version == "0.7.3"
    if change == "add_kt_kernel":
        assert after.kt_kernel_version == "0.7.2" and first.kt_kernel_version is None
    if change == "touch_experts":
        assert after.kt_wants_gpu_experts_mask is False
    if change == "remove_sglang_adds_error":
        assert after.error_kind == "not_installed"
    else:
        assert read_sglang_facts(env.python, cache_dir=cache).from_cache


def test_venvs_sharing_one_base_interpreter_do_not_share_entries(tmp_path, cache):
    a = FakeEnv(tmp_path / "a").install_sglang(dist="sglang-kt", version="0.7.2")
    b = FakeEnv(tmp_path / "b").install_sglang(dist="sglang", version="0.5.23")
    assert os.path.realpath(a.python) == os.path.realpath(b.python)
    fa = read_sglang_facts(a.python, cache_dir=cache)
    fb = read_sglang_facts(b.python, cache_dir=cache)
    assert (fa.distribution, fb.distribution) == ("sglang-kt", "sglang")
    assert read_sglang_facts(a.python, cache_dir=cache).distribution == "sglang-kt"
    assert read_sglang_facts(b.python, cache_dir=cache).distribution == "sglang"
    assert len(list(cache.glob("facts-*.json"))) == 2


def test_pythonpath_is_part_of_the_key(env, tmp_path, cache):
    env.install_sglang(dist="sglang-kt", version="0.7.2")
    other = FakeEnv(tmp_path / "other").install_sglang(dist="sglang", version="0.5.23").site
    plain = read_sglang_facts(env.python, cache_dir=cache)
    shadowed = read_sglang_facts(env.python, cache_dir=cache, env={**os.environ, "PYTHONPATH": str(other)})
    assert plain.distribution == "sglang-kt"
    assert shadowed.distribution == "sglang" and not shadowed.from_cache
    assert read_sglang_facts(env.python, cache_dir=cache).from_cache


def test_corrupt_or_foreign_cache_entries_are_misses(env, cache):
    env.install_sglang()
    read_sglang_facts(env.python, cache_dir=cache)
    (entry,) = cache.glob("facts-*.json")
    for junk in ("{not json", "[]", json.dumps({"schema": 999}), json.dumps({"schema": 1, "python": "/x", "facts": {}})):
        entry.write_text(junk)
        f = read_sglang_facts(env.python, cache_dir=cache)
        assert f.ok and not f.from_cache
    assert read_sglang_facts(env.python, cache_dir=cache).from_cache


def _mutations(entry: dict):
    """Cache entries that parse as JSON but hold a wrong type somewhere that is read."""
    facts = entry["facts"]
    yield {**entry, "facts": {**facts, "ok": "yes"}}
    yield {**entry, "facts": {**facts, "options": {"--x": 1}}}
    yield {**entry, "facts": {**facts, "options": [5]}}
    yield {**entry, "facts": {**facts, "options": [{**facts["options"][0], "dest": 7}]}}
    yield {**entry, "facts": {**facts, "options": [{**facts["options"][0], "option_strings": "--model"}]}}
    yield {**entry, "facts": {**facts, "options": [{**facts["options"][0], "nargs": True}]}}
    yield {**entry, "facts": {**facts, "kt_kernel": "0.7.2"}}
    yield {**entry, "facts": {**facts, "kt_kernel": {"wants_gpu_experts_mask": "yes"}}}
    yield {**entry, "facts": {**facts, "distribution": ["sglang-kt"]}}
    yield {**entry, "facts": {**facts, "warnings": "one"}}
    yield {**entry, "facts": {**facts, "kt_wrapper_calls": {"compatible": 1}}}
    yield {**entry, "stamps": []}
    yield {**entry, "stamps": {**entry["stamps"], "listing": []}}
    yield {**entry, "stamps": {**entry["stamps"], "sglang_init": [0, None]}}


def test_cache_entries_of_the_wrong_shape_are_misses_and_rebuilt(env, cache):
    env.install_sglang().install_kt_kernel()
    good = read_sglang_facts(env.python, cache_dir=cache)
    (entry_path,) = cache.glob("facts-*.json")
    entry = json.loads(entry_path.read_text())
    for bad in _mutations(entry):
        entry_path.write_text(json.dumps(bad))
        f = read_sglang_facts(env.python, cache_dir=cache)
        assert f.ok and not f.from_cache and f == good, bad
        rebuilt = json.loads(entry_path.read_text())["facts"]  # timings differ run to run
        assert {k: v for k, v in rebuilt.items() if "seconds" not in k} == \
            {k: v for k, v in entry["facts"].items() if "seconds" not in k}
        assert read_sglang_facts(env.python, cache_dir=cache).from_cache


def test_a_worker_answer_of_the_wrong_shape_is_an_error(tmp_path, cache):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho \'{"ok": true, "options": [{"dest": 5}]}\'\n')
    fake.chmod(0o755)
    f = read_sglang_facts(str(fake), cache_dir=cache)
    assert f.error_kind == "worker_failed" and "wrong shape" in f.error and "options[0]" in f.error
    assert not list(cache.glob("facts-*.json"))


def test_kt_launch_cache_dir_wins(env, tmp_path, monkeypatch):
    env.install_sglang()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "kt"))
    read_sglang_facts(env.python)
    assert list((tmp_path / "kt" / "sglang").glob("facts-*.json"))
    assert not (tmp_path / "xdg").exists()
    assert clear_sglang_facts_cache() == 1


def test_unwritable_cache_dir_still_answers(env, tmp_path):
    env.install_sglang()
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    f = read_sglang_facts(env.python, cache_dir=blocker / "sub")
    assert f.ok and not f.from_cache


def test_wrapper_interpreters_are_answered_but_not_cached(env, tmp_path, cache):
    env.install_sglang()
    shim = tmp_path / "shim-python"
    shim.write_text(f'#!/bin/sh\nexec "{env.python}" "$@"\n')
    shim.chmod(0o755)
    f = read_sglang_facts(str(shim), cache_dir=cache)
    assert f.ok and f.distribution == "sglang-kt"
    assert any("wrapper" in w for w in f.warnings)
    assert not list(cache.glob("facts-*.json"))


def test_refresh_bypasses_the_cache(env, cache):
    env.install_sglang()
    read_sglang_facts(env.python, cache_dir=cache)
    assert not read_sglang_facts(env.python, cache_dir=cache, refresh=True).from_cache


# -- errors: a value, never an exception ----------------------------------------------------


def test_interpreter_missing(tmp_path, cache):
    for python in (str(tmp_path / "no" / "python"), "no-such-python-kt-launch", ""):
        f = read_sglang_facts(python, cache_dir=cache)
        assert not f.ok and f.error_kind == "interpreter_missing"
        assert "not found" in f.error and f.options == {}
    notexec = tmp_path / "python"
    notexec.write_text("")
    assert read_sglang_facts(str(notexec), cache_dir=cache).error_kind == "interpreter_missing"


def test_sglang_not_installed(env, cache):
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.error_kind == "not_installed"
    assert "no module named 'sglang'" in f.error and "sglang-kt" in f.error
    assert not list(cache.glob("facts-*.json"))  # errors are not cached


def test_import_failure_is_reported_and_not_cached(env, cache):
    env.install_sglang(server_args="import torch_that_is_not_here\n" + SERVER_ARGS_OK)
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.error_kind == "import_failed"
    assert "cannot import sglang.srt.server_args" in f.error
    assert "torch_that_is_not_here" in f.error
    assert f.distribution == "sglang-kt"  # known even though the import failed
    assert not list(cache.glob("facts-*.json"))
    # The cure (installing the dependency) changes nothing we stamp; a retry must re-run.
    (env.site / "torch_that_is_not_here.py").write_text("")
    assert read_sglang_facts(env.python, cache_dir=cache).ok


def test_system_exit_during_import(env, cache):
    env.install_sglang(server_args="raise SystemExit(3)\n")
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.error_kind == "import_failed" and "SystemExit" in f.error


def test_parser_failure(env, cache):
    env.install_sglang(server_args="class ServerArgs:\n    @staticmethod\n    def add_cli_args(p):\n        raise ValueError('bad flag table')\n")
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.error_kind == "parser_failed" and "bad flag table" in f.error


def test_timeout(env, cache):
    env.install_sglang(server_args="import time\ntime.sleep(30)\n")
    t0 = time.monotonic()
    f = read_sglang_facts(env.python, cache_dir=cache, timeout_s=1)
    assert time.monotonic() - t0 < 10
    assert f.error_kind == "timeout" and "within 1 s" in f.error


def test_noise_on_stdout_during_import_does_not_break_the_answer(env, cache):
    env.install_sglang(
        server_args="import os, sys\nprint('hello from sglang')\nos.write(1, b'raw fd noise\\n')\n"
        "sys.stdout.write('{\"ok\": false}')\n" + SERVER_ARGS_OK
    )
    f = read_sglang_facts(env.python, cache_dir=cache)
    assert f.ok, f.error


def test_worker_that_is_not_a_python(tmp_path, cache):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'not json'\necho 'boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    f = read_sglang_facts(str(fake), cache_dir=cache)
    assert f.error_kind == "worker_failed"
    assert "status 3" in f.error and "boom" in f.error


def test_worker_bad_requests(env):
    env.install_sglang()
    worker = str(sf.WORKER)
    for stdin, mode in (("not json", "parse"), ('{"argvs": [[1]]}', "parse"), ("", "nonsense")):
        proc = subprocess.run([env.python, worker, mode], input=stdin, capture_output=True, text=True, check=False)
        data = json.loads(proc.stdout)
        assert data["ok"] is False and data["error_kind"] == "bad_request"


# -- parse mode -----------------------------------------------------------------------------


def test_parse_with_the_target_parser(env):
    env.install_sglang()
    ns = parse_with_real_parser(env.python, ["--model", "/m", "--kt-numa-nodes", "0", "1", "--tp-size", "2",
                                              "--disable-cuda-graph", "--served-model-name", "None"])
    assert ns["model_path"] == "/m"
    assert ns["kt_numa_nodes"] == [0, 1]
    assert ns["tensor_parallel_size"] == 2
    assert ns["disable_cuda_graph"] is True
    assert ns["served_model_name"] is None
    assert ns["kt_method"] == "AMXINT4"
    assert ns["weird"] == {"__repr__": "Weird()", "__type__": "Weird"}


def test_parse_rejections_are_values_in_a_batch_and_errors_alone(env):
    env.install_sglang()
    outcomes = parse_many_with_real_parser(env.python, [
        ["--model", "/m"],
        ["--model", "/m", "--kt-gpu-experts-ratio", "0.5"],
        ["--kt-method", "X"],
        ["--model", "/m", "--kt-threadpool-count", "two"],
        ["--model", "/m", "--kt-expert-placement-strategy", "best"],
        ["--help"],
    ])
    assert [o.ok for o in outcomes] == [True, False, False, False, False, False]
    assert "unrecognized arguments: --kt-gpu-experts-ratio 0.5" in outcomes[1].error
    assert "required: --model-path/--model" in outcomes[2].error
    assert "invalid int value" in outcomes[3].error
    assert "invalid choice" in outcomes[4].error
    assert outcomes[0].argv == ("--model", "/m")
    with pytest.raises(SglangParseError) as exc:
        parse_with_real_parser(env.python, ["--model", "/m", "--nope"])
    assert "--nope" in exc.value.message and exc.value.argv == ("--model", "/m", "--nope")


def test_parse_worker_failures_raise(env, tmp_path):
    with pytest.raises(SglangWorkerError) as exc:
        parse_with_real_parser(env.python, ["--model", "/m"])  # sglang not installed
    assert exc.value.kind == "import_failed"
    with pytest.raises(SglangWorkerError) as exc:
        parse_with_real_parser(str(tmp_path / "missing"), [])
    assert exc.value.kind == "interpreter_missing"


# -- recorded facts ------------------------------------------------------------------------


def test_load_recorded_facts_file(env, tmp_path):
    env.install_sglang()
    proc = subprocess.run([env.python, str(sf.WORKER)], capture_output=True, text=True, check=True)
    path = tmp_path / "facts.json"
    path.write_text(proc.stdout)
    f = load_sglang_facts_file(path)
    assert f.ok and f.distribution == "sglang-kt" and f.has_flag("--kt-numa-nodes")
    bad = load_sglang_facts_file(tmp_path / "missing.json")
    assert bad.error_kind == "worker_failed" and "cannot read" in bad.error
    path.write_text("[1]")
    assert not load_sglang_facts_file(path).ok


def test_dataclasses_are_frozen_and_hashable():
    info = OptionInfo.from_json({"option_strings": ["--a"], "dest": "a", "action": "_StoreAction",
                                 "default": [1], "choices": ["x"], "nargs": "+"})
    assert hash(info) == hash(OptionInfo.from_json({"option_strings": ["--a"], "dest": "a",
                                                     "action": "_StoreAction", "default": [1],
                                                     "choices": ["x"], "nargs": "+"}))
    facts = SglangFacts.from_worker_json("py", {"ok": True, "options": [{"option_strings": ["--a"], "dest": "a"}]})
    hash(facts)
    with pytest.raises(Exception):
        facts.version = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        facts.options["--b"] = info  # type: ignore[index]
    failed = SglangFacts.from_worker_json("py", {"ok": False, "error_kind": "not_installed", "error": "nope"})
    assert not failed.ok and failed.error == "nope" and failed.options == {}


# -- caches you can trust (issue 18) --------------------------------------------------------


def test_a_planted_symlink_at_the_entry_is_replaced_not_followed(env, cache, tmp_path, capfd):
    env.install_sglang()
    first = read_sglang_facts(env.python, cache_dir=cache)
    (entry,) = cache.glob("facts-*.json")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    entry.unlink()
    entry.symlink_to(victim)
    again = read_sglang_facts(env.python, cache_dir=cache)
    assert first.ok and again.ok and not again.from_cache  # the link is not read as the cache
    assert victim.read_text() == "precious\n"  # nor written through
    assert entry.is_file() and not entry.is_symlink()
    assert "symbolic link" in capfd.readouterr().err


def test_a_cold_read_says_so_once_on_stderr(env, cache, capfd):
    env.install_sglang()
    read_sglang_facts(env.python, cache_dir=cache)
    err = capfd.readouterr().err
    assert "reading SGLang's parser from" in err and "(first time only" in err
    assert read_sglang_facts(env.python, cache_dir=cache).from_cache
    assert "reading SGLang's parser" not in capfd.readouterr().err  # warm: silent


@pytest.mark.parametrize("why", ["world-writable", "another owner"])
def test_an_untrusted_cache_dir_is_not_used(env, tmp_path, monkeypatch, capfd, why):
    env.install_sglang()
    kt = tmp_path / "kt"
    kt.mkdir()
    if why == "world-writable":
        kt.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("making a folder of another owner needs root")
        os.chown(kt, 54321, 54321)
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(kt))
    f = read_sglang_facts(env.python)
    assert f.ok and not list(kt.rglob("facts-*.json"))
    err = capfd.readouterr().err
    assert "no cache" in err and str(kt) in err and ("writable by every user" in err or "belongs to user id" in err)
