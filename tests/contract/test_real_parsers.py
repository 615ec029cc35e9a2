"""Contract: kt-launch's view of SGLang comes from the real parsers of the real packages.

These run the introspection worker under two real environments built by
``tests/contract/setup_venvs.sh`` (sglang-kt 0.7.2 and upstream sglang 0.5.23, each with
kt-kernel 0.7.2 beside it). They are never skipped: the session fixture runs the setup script
(a stamp check, well under a second when warm; about three minutes cold) and fails with its
output if the environments cannot be built. Set KT_LAUNCH_NO_VENV_SETUP=1 to only check that
they exist.

The parser dumps under tests/data/ are checked against the live parsers here; regenerate them
with ``KT_LAUNCH_UPDATE_PARSER_DUMPS=1 .venv/bin/pytest tests/contract/test_real_parsers.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kt_launch.facts.sglang import (
    WORKER,
    SglangFacts,
    SglangParseError,
    load_sglang_facts_file,
    parse_many_with_real_parser,
    parse_with_real_parser,
    read_sglang_facts,
)

from contract.conftest import FLAVOURS

UPSTREAM_KT_FLAGS = {
    "--kt-weight-path",
    "--kt-method",
    "--kt-cpuinfer",
    "--kt-threadpool-count",
    "--kt-num-gpu-experts",
    "--kt-max-deferred-experts-per-token",
}
SGLANG_KT_ONLY_KT_FLAGS = {
    "--kt-numa-nodes",
    "--kt-gpu-experts-ratio",
    "--kt-gpu-prefill-token-threshold",
    "--kt-enable-dynamic-expert-update",
    "--kt-expert-placement-strategy",
    "--kt-lora-path",
    "--kt-expert-lora-path",
    "--record-kt-gpu-expert-distribution",
}


# -- environments --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def worker_json(real_venvs, facts_cache) -> dict[str, dict]:
    """The worker's raw answer per flavour (run directly, as the launcher does). Run once per test run: the
    first pytest-xdist worker to need it keeps its stdout beside the shared facts cache for the others."""
    out = {}
    with open(facts_cache / ".worker-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for flavour, python in real_venvs.items():
            kept = facts_cache / f"worker-stdout-{flavour}.txt"
            if not kept.exists():
                proc = subprocess.run(
                    [python, str(WORKER), "facts"], capture_output=True, text=True, timeout=600, check=False
                )
                assert proc.returncode == 0, proc.stderr[-3000:]
                kept.write_text(proc.stdout)
            stdout = kept.read_text()
            # stdout is exactly one JSON object even though sglang-kt prints warnings on import.
            lines = [ln for ln in stdout.splitlines() if ln.strip()]
            assert len(lines) == 1, stdout[:2000]
            out[flavour] = json.loads(lines[0])
    return out


# -- what each parser has ------------------------------------------------------------------


def test_distributions_are_told_apart(real_facts):
    kt, up = real_facts["sglang-kt"], real_facts["sglang"]
    assert (kt.distribution, kt.version) == ("sglang-kt", "0.7.2")
    assert (up.distribution, up.version) == ("sglang", "0.5.23")
    assert kt.python_version and kt.python_version.startswith("3.")
    assert kt.sglang_path and kt.sglang_path.endswith("sglang")


def test_sglang_kt_has_its_kt_flags(real_facts):
    kt = real_facts["sglang-kt"]
    for flag in UPSTREAM_KT_FLAGS | SGLANG_KT_ONLY_KT_FLAGS:
        assert kt.has_flag(flag), flag
    assert kt.has_flag("--disable-cuda-graph")
    assert kt.option("--disable-cuda-graph").action == "_StoreTrueAction"
    assert not kt.option("--disable-cuda-graph").deprecated
    assert kt.has_flag("--enable-piecewise-cuda-graph")
    numa = kt.option("--kt-numa-nodes")
    assert (numa.dest, numa.type, numa.nargs, numa.default) == ("kt_numa_nodes", "int", "+", None)
    assert numa.is_list and numa.takes_value
    placement = kt.option("--kt-expert-placement-strategy")
    assert placement.default == "uniform"
    assert set(placement.choices) == {"frequency", "front-loading", "uniform", "random"}
    assert kt.option("--kt-gpu-experts-ratio").type == "float"
    assert not kt.option("--kt-enable-dynamic-expert-update").takes_value
    # The fork has no decode/prefill CUDA-graph split.
    assert not kt.has_flag("--disable-decode-cuda-graph")
    assert not kt.has_flag("--cuda-graph-backend-decode")


def test_upstream_has_exactly_six_kt_flags(real_facts):
    up = real_facts["sglang"]
    kt_flags = {f for f in up.options if f.startswith("--kt-")}
    assert kt_flags == UPSTREAM_KT_FLAGS
    for flag in SGLANG_KT_ONLY_KT_FLAGS:
        assert not up.has_flag(flag), flag
    # Deprecated in upstream: still parsed, help says to use the decode/prefill backends.
    dcg = up.option("--disable-cuda-graph")
    assert dcg is not None and dcg.deprecated and dcg.action == "DeprecatedStoreTrueAction"
    for flag in ("--disable-decode-cuda-graph", "--disable-prefill-cuda-graph"):
        assert up.option(flag).action == "_StoreTrueAction", flag
    for flag in ("--cuda-graph-backend-decode", "--cuda-graph-backend-prefill"):
        assert set(up.option(flag).choices) == {"full", "breakable", "disabled"}, flag
    assert not up.has_flag("--enable-piecewise-cuda-graph")


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_kt_defaults(real_facts, flavour):
    f = real_facts[flavour]
    method = f.option("--kt-method")
    assert (method.type, method.default, method.choices) == ("str", "AMXINT4", None)
    assert f.option("--kt-threadpool-count").default == 2
    for flag in ("--kt-cpuinfer", "--kt-num-gpu-experts", "--kt-weight-path", "--kt-max-deferred-experts-per-token"):
        assert f.option(flag).default is None, flag
    assert f.option("--kt-cpuinfer").type == "int"
    assert f.option("--model-path").required
    assert f.option("--model") is f.option("--model-path")
    for flag in ("--lora-paths", "--lora-backend", "--max-running-requests", "--disable-shared-experts-fusion",
                 "--disable-custom-all-reduce", "--pp-size", "--speculative-algorithm"):
        assert f.has_flag(flag), flag
    assert "triton" in f.option("--lora-backend").choices


def test_parallel_size_dests_differ_between_flavours(real_facts):
    """Same flag, different dest: a contract test must map flags to dests through the facts."""
    kt, up = real_facts["sglang-kt"], real_facts["sglang"]
    assert kt.option("--tp-size").dest == "tensor_parallel_size"
    assert up.option("--tp-size").dest == "tp_size"
    assert kt.option("--pp-size").dest == "pipeline_parallel_size"
    assert up.option("--pp-size").dest == "pp_size"


def test_kt_kernel_signature_and_call_compatibility(real_facts):
    kt, up = real_facts["sglang-kt"], real_facts["sglang"]
    for f in (kt, up):
        assert f.kt_kernel_version == "0.7.2"
        assert f.kt_wants_gpu_experts_mask is True
        assert f.kt_gpu_experts_mask_required is True
        assert "gpu_experts_mask" in f.kt_wrapper_params
    # Upstream calls KTMoEWrapper(num_gpu_experts=...) and omits gpu_experts_mask.
    assert up.kt_wrapper_call_compatible is False
    assert up.kt_wrapper_call_missing == ("gpu_experts_mask",)
    # sglang-kt passes **kwargs: the source alone cannot prove it, nor is anything missing.
    assert kt.kt_wrapper_call_compatible is None
    assert kt.kt_wrapper_call_missing == ()


# -- parsing with the real parsers ---------------------------------------------------------

KT_ARGV = [
    "--model-path", "/models/DeepSeek-V2-Lite-Chat",
    "--kt-weight-path", "/models/DeepSeek-V2-Lite-Chat-CPU-weight",
    "--kt-method", "AMXINT4",
    "--kt-cpuinfer", "16",
    "--kt-threadpool-count", "1",
    "--kt-num-gpu-experts", "4",
    "--kt-max-deferred-experts-per-token", "2",
    "--tp-size", "1",
    "--max-running-requests", "4",
    "--disable-shared-experts-fusion",
]


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_parse_kt_argv(real_venvs, real_facts, flavour):
    ns = parse_with_real_parser(real_venvs[flavour], KT_ARGV)
    f = real_facts[flavour]
    expect = {
        "--model-path": "/models/DeepSeek-V2-Lite-Chat",
        "--kt-weight-path": "/models/DeepSeek-V2-Lite-Chat-CPU-weight",
        "--kt-method": "AMXINT4",
        "--kt-cpuinfer": 16,
        "--kt-threadpool-count": 1,
        "--kt-num-gpu-experts": 4,
        "--kt-max-deferred-experts-per-token": 2,
        "--tp-size": 1,
        "--max-running-requests": 4,
        "--disable-shared-experts-fusion": True,
    }
    for flag, value in expect.items():
        assert ns[f.option(flag).dest] == value, flag
    # Everything not given keeps the default the facts report.
    assert ns["port"] == f.option("--port").default


def test_parse_sglang_kt_only_flags(real_venvs):
    argv = KT_ARGV + [
        "--kt-numa-nodes", "0", "1",
        "--kt-gpu-experts-ratio", "0.25",
        "--kt-expert-lora-path", "/adapters/expert",
        "--kt-expert-placement-strategy", "front-loading",
        "--lora-backend", "triton",
        "--disable-custom-all-reduce",
        "--disable-cuda-graph",
        "--lora-paths", "moe=/adapters/merged",
    ]
    ns = parse_with_real_parser(real_venvs["sglang-kt"], argv)
    assert ns["kt_numa_nodes"] == [0, 1]
    assert ns["kt_gpu_experts_ratio"] == 0.25
    assert ns["kt_expert_lora_path"] == "/adapters/expert"
    assert ns["kt_expert_placement_strategy"] == "front-loading"
    assert ns["lora_backend"] == "triton"
    assert ns["disable_custom_all_reduce"] is True
    assert ns["disable_cuda_graph"] is True
    assert ns["lora_paths"] == ["moe=/adapters/merged"]


def test_upstream_rejects_fork_flags_and_batch_reports_each(real_venvs):
    python = real_venvs["sglang"]
    outcomes = parse_many_with_real_parser(
        python,
        [
            KT_ARGV + ["--kt-numa-nodes", "0", "1"],
            KT_ARGV + ["--kt-expert-lora-path", "/adapters/expert"],
            KT_ARGV + ["--disable-decode-cuda-graph", "--cuda-graph-backend-prefill", "disabled"],
            KT_ARGV + ["--cuda-graph-backend-prefill", "sometimes"],
            ["--kt-method", "AMXINT4"],
        ],
    )
    assert [o.ok for o in outcomes] == [False, False, True, False, False]
    assert "unrecognized arguments: --kt-numa-nodes 0 1" in outcomes[0].error
    assert "--kt-expert-lora-path" in outcomes[1].error
    assert outcomes[2].namespace["disable_decode_cuda_graph"] is True
    assert outcomes[2].namespace["cuda_graph_backend_prefill"] == "disabled"
    assert "invalid choice" in outcomes[3].error
    assert "--model-path" in outcomes[4].error and "required" in outcomes[4].error
    with pytest.raises(SglangParseError) as exc:
        parse_with_real_parser(python, KT_ARGV + ["--kt-gpu-experts-ratio", "0.5"])
    assert "--kt-gpu-experts-ratio" in exc.value.message
    assert exc.value.argv[-1] == "0.5"


def test_kt_method_is_not_validated_by_either_parser(real_venvs):
    """The parser takes any string; kt-kernel rejects lower case later (reference §0.4)."""
    for python in real_venvs.values():
        ns = parse_with_real_parser(python, ["--model-path", "/m", "--kt-method", "amxint4"])
        assert ns["kt_method"] == "amxint4"


# -- the cache against a real interpreter -----------------------------------------------------


def test_warm_cache_hit_starts_no_process_and_is_identical(real_venvs, real_facts, facts_cache, monkeypatch):
    """A warm hit is cheap because it starts no interpreter (its speed is a benchmark, not a test)."""
    def no_process(*a, **k):
        raise AssertionError("a warm cache hit must not start a process")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    for flavour, python in real_venvs.items():
        again = read_sglang_facts(python, cache_dir=facts_cache)
        assert again.from_cache, flavour
        assert again == real_facts[flavour]


def test_worker_output_is_json_only(worker_json):
    for flavour, data in worker_json.items():
        assert data["ok"] is True, flavour
        assert data["schema"] == 1
        assert data["distribution"] == flavour
        assert data["kt_kernel"]["version"] == "0.7.2"
        actions = {o["action"] for o in data["options"]}
        assert "_HelpAction" in actions and "_StoreTrueAction" in actions


# -- saved dumps for the flavour catalogue ----------------------------------------------------


def sanitize(data: dict, venv: Path) -> dict:
    """Machine-independent worker answer: venv and shared-torch paths replaced, timings dropped."""
    venv_s = str(venv)
    torch_dirs = [str(p) for p in venv.parent.glob("_torch-*")]

    def fix(v):
        if isinstance(v, str):
            v = v.replace(venv_s, "$VENV")
            for t in torch_dirs:
                v = v.replace(t, "$SHARED_TORCH")
            return v
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    out = {k: v for k, v in data.items() if k not in ("seconds", "import_seconds", "sys_path", "site_dirs", "python_version")}
    # Some choices are built from sets, so their order follows the string hash seed.
    options = []
    for o in out.get("options") or ():
        o = dict(o)
        if isinstance(o.get("choices"), list):
            o["choices"] = sorted(o["choices"], key=lambda c: json.dumps(c, sort_keys=True))
        options.append(o)
    out["options"] = options
    return fix(out)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_saved_parser_dump_matches_live_parser(worker_json, real_venvs, flavour):
    spec = FLAVOURS[flavour]
    live = sanitize(worker_json[flavour], Path(real_venvs[flavour]).parent.parent)
    dump = spec["dump"]
    if os.environ.get("KT_LAUNCH_UPDATE_PARSER_DUMPS") == "1" or not dump.exists():
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_text(json.dumps(live, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    saved = json.loads(dump.read_text(encoding="utf-8"))
    assert saved == live, (
        f"{dump.name} is out of date with the live {flavour} parser; "
        "regenerate with KT_LAUNCH_UPDATE_PARSER_DUMPS=1"
    )
    facts = load_sglang_facts_file(dump)
    assert facts.ok and facts.distribution == flavour and facts.version == spec["version"]
    assert facts.options.keys() == SglangFacts.from_worker_json("x", worker_json[flavour]).options.keys()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
