"""The step graph: each resolver step declares what it fills and reads; the order is computed; a wrong declaration
fails when the pipeline is imported; and adding a derived flag takes the Option and its step, nothing else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kt_launch.core.options import DERIVED, Flag, Option, on_all
from kt_launch.core.plan import Resolved
from kt_launch.resolve.pipeline import STEPS, resolve_flavor
from kt_launch.resolve.steps import ROOTS, Step, StepGraphError, ordered

from core.support import XEON16, plan_for

REPO = Path(__file__).resolve().parents[2]


class _Recording(dict):
    """A values dict that remembers which keys were looked at."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


@pytest.mark.parametrize("profile", ["deepseek-v2-lite.yaml", "deepseek-v2-lite-lora.yaml", "demo.yaml"])
@pytest.mark.parametrize("flavour", ["sglang-kt", "sglang", "kt-moe-lora"])
def test_every_step_reads_only_what_it_declares(tmp_path, profile, flavour):
    """Run the steps in the computed order on real profiles: each reads only its own fills, its declared reads
    and the roots, and so can run wherever the graph puts it."""
    from kt_launch.facts.host import host_from_json
    from kt_launch.facts.profile import load_config
    from kt_launch.resolve.inputs import ResolveInput

    cfg, prov = load_config(REPO / "configs" / profile, {}, [f"runtime.flavor={flavour}"])
    inp = ResolveInput(config=cfg, provenance=prov, host=host_from_json(XEON16, "test host"),
                       current_python="/usr/bin/python3", checks=False)
    out: list = []
    values: dict[str, Resolved] = {"runtime.flavor": resolve_flavor(inp, out)[0]}
    for step in STEPS:
        rec = _Recording(values)
        step(inp, rec, out)
        undeclared = rec.read - set(step.fills) - set(step.reads) - ROOTS
        assert not undeclared, f"step {step.name} read {sorted(undeclared)} without declaring it"
        values = dict(rec)


def _noop(inp, values, out):
    pass


def _opt(key: str, resolve=DERIVED) -> Option:
    return Option(key, int, "test", on_all(Flag("--" + key.replace(".", "-"))), resolve=resolve)


@pytest.mark.parametrize("steps,options,problem", [
    ([], [_opt("kt.x")], "no step fills it"),
    ([Step("a", ("kt.nope",), (), _noop, "")], [], "neither an Option"),
    ([Step("a", ("kt.x",), (), _noop, ""), Step("b", ("kt.x",), (), _noop, "")], [_opt("kt.x")], "filled by step"),
    ([Step("a", ("kt.x",), ("kt.y",), _noop, "")], [_opt("kt.x")], "no fact and no step's value"),
    ([Step("a", ("kt.x",), ("kt.y",), _noop, ""), Step("b", ("kt.y",), ("kt.x",), _noop, "")],
     [_opt("kt.x"), _opt("kt.y")], "cycle"),
])
def test_wrong_declarations_are_refused(steps, options, problem):
    with pytest.raises(StepGraphError, match=problem):
        ordered(steps, options)


def test_order_follows_reads_not_declaration_order():
    a = Step("a", ("kt.x",), ("kt.y",), _noop, "")
    b = Step("b", ("kt.y",), ("host",), _noop, "")
    assert [s.name for s in ordered([a, b], [_opt("kt.x"), _opt("kt.y")])] == ["b", "a"]


def test_the_real_graph_runs_readers_after_fillers():
    seen: set[str] = set(ROOTS)
    fills = {k for s in STEPS for k in s.fills}
    for s in STEPS:
        assert {r for r in s.reads if r in fills} - set(s.fills) <= seen, s.name
        seen |= set(s.fills)


def test_a_step_that_fills_an_undeclared_key_fails(write_profile, monkeypatch):
    from kt_launch.resolve import pipeline

    bad = Step("bad", ("kt.cpuinfer",), (), lambda inp, values, out: values.update({"kt.method": None}), "")
    monkeypatch.setattr(pipeline, "STEPS", (bad,))
    with pytest.raises(StepGraphError, match="without declaring"):
        plan_for(REPO / "configs" / "deepseek-v2-lite.yaml")


# -- the walkthrough of docs/ARCHITECTURE.md: a new derived flag in two places -----------------------------

_OPTION = '''    Option("kt.foo_bar", int, "A test-only count; null = the host's NUMA nodes with CPUs.",
           on_all(Flag("--kt-foo-bar")), limits={"ge": 0}, resolve=DERIVED),
'''
_STEP = '''

@step(fills=("kt.foo_bar",), reads=("host", "config"))
def resolve_foo_bar(inp, values, out):
    """kt.foo_bar: the user's value, else the NUMA nodes that have usable CPUs."""
    from kt_launch.resolve.values import user_value

    v = inp.config.kt.foo_bar
    values["kt.foo_bar"] = (user_value(inp.provenance, "kt.foo_bar", v) if v is not None else
                            Resolved(len(inp.host.cpu_numa_nodes), "host", "NUMA nodes with usable CPUs"))
'''
_CHECK = '''
import json, sys
from kt_launch.cli import main
host, prof = sys.argv[1], sys.argv[2]
for flavour in ("sglang-kt", "sglang", "kt-moe-lora"):
    for sets, want in (([], "1"), (["--set", "kt.foo_bar=7"], "7"), (["--set", "kt.foo_bar=-1"], None)):
        rc = main(["--profile", prof, "--dry-run", "--json", "--no-check", "--host-facts", host,
                   "--set", f"runtime.flavor={flavour}", *sets])
        print(json.dumps({"flavour": flavour, "sets": sets, "want": want, "rc": rc}), file=sys.stderr)
main(["schema"])
'''


def test_adding_a_derived_flag_takes_the_option_and_its_step(tmp_path, host_file):
    """A copy of the package with one Option (core/options.py) and one @step (resolve/threads.py) added, nothing
    else: the value is derived, rendered on every flavour, settable, bounded, and in the schema."""
    pkg = tmp_path / "kt_launch"
    shutil.copytree(REPO / "kt_launch", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    options = pkg / "core" / "options.py"
    text = options.read_text()
    anchor = '    Option("kt.expert_placement"'
    assert anchor in text
    options.write_text(text.replace(anchor, _OPTION + anchor, 1))
    threads = pkg / "resolve" / "threads.py"
    threads.write_text(threads.read_text() + _STEP)
    r = subprocess.run([sys.executable, "-c", _CHECK, str(host_file), str(REPO / "configs" / "deepseek-v2-lite.yaml")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    docs = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    plans = [json.loads(chunk) for chunk in _json_docs(r.stdout)]
    schema = plans.pop()
    assert '"foo_bar"' in json.dumps(schema) and "A test-only count" in json.dumps(schema)
    assert len(docs) == 9 and len(plans) == 6  # the bounded value (-1) is exit 2 with no plan
    for doc, plan in zip([d for d in docs if d["want"] is not None], plans):
        assert doc["rc"] == 0 and plan["argv"][plan["argv"].index("--kt-foo-bar") + 1] == doc["want"]
        assert plan["resolved"]["kt.foo_bar"]["source"] == ("host" if not doc["sets"] else "cli")
    assert all(d["rc"] == 2 for d in docs if d["want"] is None)
    assert "kt.foo_bar" in r.stderr  # the refusal names the key


def _json_docs(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON documents (each starts with '{' at column 0)."""
    out, cur = [], []
    for line in text.splitlines():
        if line == "{" and cur:
            out.append("\n".join(cur))
            cur = []
        cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


def test_architecture_shows_the_current_step_graph():
    from kt_launch.render.docs import STEPS_END, STEPS_START, steps_table
    from kt_launch.resolve.pipeline import STEPS

    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split(STEPS_START, 1)[1].split(STEPS_END, 1)[0].strip()
    assert block == steps_table(STEPS), "docs/ARCHITECTURE.md drifted: run `kt-launch schema --readme docs/ARCHITECTURE.md`"


def test_a_flag_the_installed_sglang_lacks(write_profile):
    """A value kt-launch derived for a flag the installed parser lacks is left out with KT-I305 (the server keeps its
    own default); the same flag set by the user is KT-E301."""
    from dataclasses import replace

    from kt_launch.core.options import BY_KEY, flags_of
    from kt_launch.render.argv import render_command

    prof = REPO / "configs" / "deepseek-v2-lite.yaml"
    for sets, code in (([], "KT-I305"), (["kt.numa_nodes=[0]"], "KT-E301")):
        plan = plan_for(prof, sets=["runtime.flavor=sglang-kt", *sets])
        assert plan.values["kt.numa_nodes"].value == [0]
        plan = replace(plan, accepted_flags=flags_of("sglang-kt") - {"--kt-numa-nodes"})
        cmd = render_command(plan)
        assert "--kt-numa-nodes" not in cmd.argv
        assert code in {f.code for f in cmd.findings}
        assert (code == "KT-E301") == any(f.level == "error" for f in cmd.findings)
    assert isinstance(BY_KEY["kt.numa_nodes"].render["sglang-kt"], Flag)
