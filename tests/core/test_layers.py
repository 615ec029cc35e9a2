"""Layers that hold: every module imports on its own (no import cycles), and resolve() and rendering touch
neither the file system nor processes nor the network (import-linter checks the static imports in `make test`;
this checks what the code does when it runs)."""

from __future__ import annotations

import builtins
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.support import TWO_SOCKET, XEON16

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "kt_launch"
MODULES = sorted(".".join(p.relative_to(REPO).with_suffix("").parts) for p in PKG.rglob("*.py")
                 if p.name != "__main__.py" and not p.name.endswith("_worker.py"))


# One interpreter imports the launcher's third-party dependencies once (none of kt_launch), then forks a child per
# module: each child starts with no kt_launch module loaded, as a fresh interpreter would, without paying for
# an interpreter start and pydantic's import 130 times.
_FORK_EACH = """
import importlib, os, sys, traceback
import pydantic, pydantic_settings, psutil, yaml  # noqa: F401  third-party only: kt_launch stays unimported
assert not any(m == "kt_launch" or m.startswith("kt_launch.") for m in sys.modules)
failed = 0
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            print(name + ": " + traceback.format_exc().strip().splitlines()[-1], flush=True)
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own():
    """A cycle shows as 'partially initialized module' only when the cycle's second module is imported first."""
    proc = subprocess.run([sys.executable, "-c", _FORK_EACH, *MODULES], capture_output=True, text=True, timeout=300)
    assert len(MODULES) > 40 and proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


class _Touched(Exception):
    pass


@pytest.mark.parametrize("profile,host", [("deepseek-v2-lite.yaml", XEON16), ("deepseek-v2-lite-lora.yaml", TWO_SOCKET)])
def test_resolve_and_render_are_pure(profile, host, monkeypatch):
    from kt_launch.facts.host import host_from_json
    from kt_launch.facts.profile import load_config
    from kt_launch.render.argv import render_command
    from kt_launch.render.text import plan_json, plan_text
    from kt_launch.resolve.inputs import ResolveInput
    from kt_launch.resolve.pipeline import resolve

    cfg, prov = load_config(REPO / "configs" / profile, {}, ["runtime.flavor=sglang-kt"])
    inp = ResolveInput(config=cfg, provenance=prov, host=host_from_json(host), current_python="python", checks=False)
    for mod, name in ((builtins, "open"), (os, "open"), (os, "stat"), (os, "scandir"), (subprocess, "Popen"),
                      (socket, "socket")):
        monkeypatch.setattr(mod, name, lambda *a, **k: (_ for _ in ()).throw(_Touched(str(a[:1]))))
    plan = resolve(inp)
    cmd = render_command(plan)
    assert cmd.argv[1:3] == ["-m", "sglang.launch_server"]
    assert plan_text(plan, cmd, plan.findings) and plan_json(plan, cmd, plan.findings)


def _import_graph() -> dict[str, set[str]]:
    """Every kt_launch module -> the kt_launch modules it imports, from every import statement in the file
    (late imports inside functions included: a cycle through them is still a cycle)."""
    import ast

    root = REPO / "kt_launch"
    mods = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(REPO).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("kt_launch"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    out.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name.startswith("kt_launch")}
        graph[name] = {m for m in out if m in mods and m != name and not name.startswith(m + ".")}
    return graph


def test_no_import_cycle_anywhere():
    graph = _import_graph()
    state: dict[str, int] = {}
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_resolve_and_render_import_nothing_from_facts():
    graph = _import_graph()
    bad = {m: sorted(t for t in ts if t.startswith("kt_launch.facts")) for m, ts in graph.items()
           if m.startswith(("kt_launch.resolve", "kt_launch.render", "kt_launch.core"))}
    assert not {m: ts for m, ts in bad.items() if ts}


def test_facts_resolve_and_render_are_siblings():
    """facts | resolve | render: none of the three imports another (late imports included); app.py joins them."""
    graph = _import_graph()
    layers = ("kt_launch.facts", "kt_launch.resolve", "kt_launch.render")
    bad = {m: sorted(t for t in ts if t.startswith(layers) and not t.startswith(own))
           for own in layers for m, ts in graph.items() if m.startswith(own)}
    assert not {m: ts for m, ts in bad.items() if ts}
