"""KT_KERNEL_CPU_VARIANT inherited from kt-launch's own environment: the server it starts inherits it (run/execute.py
`{**os.environ, **cmd.env}`), so a plan for this machine reads it too; runtime.env wins, as in the server's
environment; a --host-facts host (another machine, its own environment) never sees it, nor do a fleet's other hosts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from kt_launch.app import Request, gather_inputs, plan_fleet
from kt_launch.resolve.isa import INHERITED_ENV, RUNTIME_ENV, server_variant_override
from kt_launch.resolve.pipeline import resolve
from preflight.support import AMX_HOST

VAR = "KT_KERNEL_CPU_VARIANT"


def profile(tmp_path, **runtime) -> str:
    doc = {"model": {"path": "/nowhere/model"},
           "kt": {"weight_path": "/nowhere/w", "method": "AMXINT8", "threadpool_count": 1},
           "runtime": {"flavor": "sglang-kt", **runtime}}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


@pytest.fixture
def amx_host(tmp_path):
    p = tmp_path / "amx.json"
    p.write_text(json.dumps(AMX_HOST))
    return str(p)


def inputs(tmp_path, host_facts=None, environ=None, **runtime):
    return gather_inputs(Request(profile(tmp_path, **runtime), host_facts=host_facts, checks=False),
                         environ if environ is not None else {})[1]


def by_code(plan, code):
    return [f for f in plan.findings if f.code == code]


def test_inherited_avx2_on_an_amx_host_lacks_amxint8(tmp_path, amx_host):
    inp = inputs(tmp_path, amx_host)
    assert by_code(resolve(inp), "KT-E240") == []  # the AMX host runs AMXINT8 ...
    forced = dataclasses.replace(inp, inherited_cpu_variant="avx2")  # ... unless the server inherits avx2
    assert server_variant_override(forced) == ("avx2", INHERITED_ENV)
    [f] = by_code(resolve(forced), "KT-E240")
    assert f.level == "error" and "AMXINT8" in f.message and f"the environment's {VAR}=avx2" in f.message
    assert "would get amx" in f.message and f.fix.startswith(f"remove {VAR} from the environment")


def test_runtime_env_beats_the_inherited_value(tmp_path, amx_host):
    inp = dataclasses.replace(inputs(tmp_path, amx_host, env={VAR: "amx"}), inherited_cpu_variant="avx2")
    assert server_variant_override(inp) == ("amx", RUNTIME_ENV)
    assert by_code(resolve(inp), "KT-E240") == []
    inp = dataclasses.replace(inputs(tmp_path, amx_host, env={VAR: "avx2"}), inherited_cpu_variant="amx")
    [f] = by_code(resolve(inp), "KT-E240")
    assert f"runtime.env {VAR}=avx2" in f.message


def test_an_unknown_inherited_value_is_named_by_its_source(tmp_path, amx_host):
    inp = dataclasses.replace(inputs(tmp_path, amx_host), inherited_cpu_variant="avx512")
    [f] = by_code(resolve(inp), "KT-W241")
    assert f"the environment's {VAR}='avx512'" in f.message


def test_only_a_plan_for_this_machine_reads_the_environment(tmp_path, amx_host):
    assert inputs(tmp_path, environ={VAR: "avx2"}).inherited_cpu_variant == "avx2"  # this machine (live facts)
    assert inputs(tmp_path, environ={}).inherited_cpu_variant is None
    inp = inputs(tmp_path, amx_host, environ={VAR: "avx2"})  # a recorded host: another machine's environment
    assert inp.inherited_cpu_variant is None and by_code(resolve(inp), "KT-E240") == []


def test_a_fleets_other_hosts_do_not_inherit_this_machines_value(tmp_path, amx_host):
    doc = {"model": {"path": "/nowhere/model"},
           "kt": {"weight_path": "/nowhere/w", "method": "AMXINT8", "threadpool_count": 1},
           "runtime": {"flavor": "sglang-kt"},
           "fleet": {"replicas": 0, "hosts": [{"name": "far", "address": "10.0.0.2", "host_facts": amx_host}]}}
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(doc))
    out = plan_fleet(Request(str(p), checks=False), {VAR: "avx2"})
    [far] = [i for i in out.plan.instances if not i.replica.local]
    assert far.inputs.inherited_cpu_variant is None and by_code(far.plan, "KT-E240") == []
