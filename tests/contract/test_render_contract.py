"""Contract: every argv kt-launch renders parses with the real SGLang parser to the resolved values.

For each bundled profile and a matrix of options, the plan is rendered for the flavour, parsed by
that package's own `ServerArgs.add_cli_args` parser (one batch per flavour, in its real venv), and
every generated flag's dest is compared with the value in the plan. A flag the parser rejects, or
a value that parses differently, fails here instead of at server start.
"""

from __future__ import annotations

import json

import pytest

from kt_launch.facts.profile import load_config
from kt_launch.facts.host import host_from_json
from kt_launch.facts.sglang import parse_many_with_real_parser
from kt_launch.render.argv import render_command
from kt_launch.core.options import OPTIONS, PASS_THROUGH_ONLY, Flag, flags_of
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.pipeline import resolve

from contract.conftest import REPO

HOST = {
    "cpu": {"model": "Xeon", "physical_cores": 32, "logical_cpus": 64, "usable_cpus": list(range(64)),
            "flags": ["avx512f", "avx512bw", "avx512_vnni", "avx512vbmi", "avx512_bf16", "amx_tile", "amx_int8",
                      "amx_bf16"]},
    "numa": [{"id": 0, "cpus": list(range(0, 16)) + list(range(32, 48))},
             {"id": 1, "cpus": list(range(16, 32)) + list(range(48, 64))}],
    "memory": {"total_bytes": 1 << 40, "available_bytes": 1 << 40},
    "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_bytes": 141 << 30}],
}

PROFILES = ["deepseek-v2-lite.yaml", "deepseek-v2-lite-lora.yaml", "demo.yaml"]
MATRIX = [
    [],
    ["kt.cpuinfer=48", "kt.num_gpu_experts=8"],
    ["kt.threadpool_count=1", "kt.numa_nodes=[1]", "kt.method=bf16"],
    ["kt.max_deferred_experts_per_token=2", "server.tp_size=2", "server.port=31000", "server.host=0.0.0.0"],
    ["server.disable_cuda_graph=true", "server.chunked_prefill_size=8192", "server.max_running_requests=16",
     "server.mem_fraction_static=0.8", "model.served_name=m1"],
    ['lora.paths=["/a/lora1", {"name": "second", "path": "/b/lora2"}]'],
    ["server.api_key=sk-test"],
]


def _plans(flavour: str):
    """(label, plan, argv) for every profile x matrix row that this flavour can express."""
    out = []
    for prof in PROFILES:
        for sets in MATRIX:
            if flavour == "sglang" and any(x.startswith("kt.numa_nodes") for x in sets):
                continue  # upstream has no --kt-numa-nodes: refused by design (KT-E301)
            cfg, prov = load_config(REPO / "configs" / prof, {}, [f"runtime.flavor={flavour}", *sets])
            if cfg.moe_lora is not None and flavour == "sglang":
                continue  # refused by design (KT-E301), tested elsewhere
            if cfg.moe_lora is not None and flavour == "sglang-kt":
                cfg, prov = load_config(REPO / "configs" / prof, {},
                                        [f"runtime.flavor={flavour}", "lora.paths=[]", *[s for s in sets if
                                                                                       not s.startswith("lora.")]])
            inp = ResolveInput(config=cfg, provenance=prov, host=host_from_json(HOST), current_python="python",
                               checks=False)
            plan = resolve(inp)
            cmd = render_command(plan)
            assert not [f for f in cmd.findings if f.level == "error"], (prof, sets, cmd.findings)
            out.append((f"{prof} {sets}", plan, cmd.argv[3:]))
    return out


def _check(flavour: str, facts, label: str, plan, parsed: dict):
    checked = 0
    for o in OPTIONS:
        key, spec = o.key, o.render[flavour]
        r = plan.values.get(key)
        if r is None or r.value is None or r.value is False or r.value == [] or not isinstance(spec, Flag):
            continue
        flag = spec.names[0]
        opt = facts.option(flag)
        if opt is None:
            continue  # not emitted for this flavour (e.g. moe_lora.* on sglang-kt)
        got = parsed.get(opt.dest)
        want = r.value
        if key == "lora.paths":
            names = [p if isinstance(p, str) else p for p in want]
            assert [json.dumps(x, sort_keys=True) if not isinstance(x, str) else x for x in got] == names, label
        elif key == "kt.numa_nodes":
            assert got == list(want), (label, key, got, want)
        elif key == "server.disable_cuda_graph":
            assert all(parsed.get(facts.option(n).dest) is True for n in spec.names), label
        elif isinstance(want, bool):
            assert got is want, (label, key, got)
        elif isinstance(want, float):
            assert float(got) == want, (label, key, got)
        else:
            assert str(got) == str(want) and type(got) in (type(want), str), (label, key, got, want)
        checked += 1
    if plan.get("moe_lora.path") and flavour == "sglang-kt":
        assert parsed["lora_backend"] == "triton" and parsed["disable_custom_all_reduce"] is True
    if flavour == "sglang":
        assert parsed["disable_shared_experts_fusion"] is True
    return checked


@pytest.mark.parametrize("flavour", ["sglang-kt", "sglang"])
def test_rendered_argv_parses_to_the_resolved_values(flavour, real_venvs, real_facts):
    facts = real_facts[flavour]
    cases = _plans(flavour)
    outcomes = parse_many_with_real_parser(real_venvs[flavour], [argv for _, _, argv in cases], timeout_s=600)
    total = 0
    for (label, plan, argv), outcome in zip(cases, outcomes):
        assert outcome.ok, f"{flavour} rejected {label}: {outcome.error}\nargv: {argv}"
        total += _check(flavour, facts, label, plan, outcome.namespace)
    assert total > 50


@pytest.mark.parametrize("flavour", ["sglang-kt", "sglang"])
def test_plan_with_real_facts_detects_flavour_and_uses_real_flags(flavour, real_facts, tmp_path):
    cfg, prov = load_config(REPO / "configs" / "deepseek-v2-lite.yaml", {}, ["runtime.flavor=auto"])
    inp = ResolveInput(config=cfg, provenance=prov, host=host_from_json(HOST), current_python="python",
                       checks=False, sglang=real_facts[flavour])
    plan = resolve(inp)
    assert plan.flavor == flavour and plan.values["runtime.flavor"].source == "host"
    assert plan.accepted_flags == real_facts[flavour].flags
    argv = render_command(plan).argv
    assert ("--kt-numa-nodes" in argv) == (flavour == "sglang-kt")


@pytest.mark.parametrize("flavour", ["sglang-kt", "sglang"])
def test_every_live_kt_flag_is_placed(flavour, real_facts):
    """The installed parser's --kt-* flags (not only the recorded dump) each have a key or a pass-through reason."""
    live = {f for f in real_facts[flavour].flags if f.startswith("--kt-")}
    assert live and live - flags_of(flavour) - set(PASS_THROUGH_ONLY) == set()
    assert flags_of(flavour) <= real_facts[flavour].flags


SINGLE = {  # one non-default value per settable flag key; str values that look like flags test the `=` form
    "model.served_name": "--api-key", "kt.weight_path": "-w", "kt.method": "bf16", "kt.cpuinfer": "7",
    "kt.threadpool_count": "1", "kt.numa_nodes": "[1]", "kt.num_gpu_experts": "5", "kt.gpu_experts_ratio": "0.25",
    "kt.expert_placement": "front-loading", "kt.max_deferred_experts_per_token": "3",
    "kt.gpu_prefill_token_threshold": "400", "kt.enable_dynamic_expert_update": "true", "lora.paths": '["/x/l"]',
    "server.host": "0.0.0.0", "server.port": "31001", "server.tp_size": "2", "server.disable_cuda_graph": "true",
    "server.chunked_prefill_size": "2048", "server.max_running_requests": "9", "server.mem_fraction_static": "0.7",
    "server.max_total_tokens": "65536", "server.api_key": "--sk-secret", "kt.expert_stats": "/x/stats.pt",
}
COMPANIONS = {"kt.expert_stats": ["kt.expert_placement=frequency"]}  # rendered only with frequency placement


@pytest.mark.parametrize("flavour", ["sglang-kt", "sglang"])
def test_each_key_alone_reads_back_through_the_real_parser(flavour, real_venvs, real_facts):
    """Every settable key with a flag on this flavour, set alone to a value unlike the default: the real parser
    reads the same value back from the rendered argv (the no-drop property, checked against the real parser)."""
    facts = real_facts[flavour]
    cases = []
    for o in OPTIONS:
        spec = o.render[flavour]
        if not (o.settable and isinstance(spec, Flag)) or o.section in ("model", "moe_lora") and o.key != "model.served_name":
            continue
        assert o.key in SINGLE, f"add a value for {o.key}"
        cfg, prov = load_config(REPO / "configs" / "deepseek-v2-lite.yaml", {},
                                [f"runtime.flavor={flavour}", f"{o.key}={SINGLE[o.key]}", *COMPANIONS.get(o.key, ())])
        inp = ResolveInput(config=cfg, provenance=prov, host=host_from_json(HOST), current_python="python",
                           checks=False)
        plan = resolve(inp)
        cases.append((o, spec, plan, render_command(plan).argv[3:]))
    outcomes = parse_many_with_real_parser(real_venvs[flavour], [argv for *_, argv in cases], timeout_s=600)
    for (o, spec, plan, argv), outcome in zip(cases, outcomes):
        assert outcome.ok, f"{flavour} rejected {o.key}: {outcome.error}\nargv: {argv}"
        want = plan.get(o.key)
        got = [outcome.namespace.get(facts.option(n).dest) for n in spec.names]
        if isinstance(want, bool):
            assert got == [want] * len(got), (o.key, got)
        elif isinstance(want, float):
            assert float(got[0]) == want, (o.key, got)
        elif isinstance(want, list):
            assert [str(x) for x in got[0]] == [str(x) for x in want], (o.key, got)
        else:
            assert str(got[0]) == str(want), (o.key, got, want)
    assert len(cases) >= 15
