"""The pipeline at the edge: gather facts (all I/O), resolve (pure), render. Used by every CLI command."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from kt_launch.facts.locate import find_profile
from kt_launch.core.profile import UserConfig
from kt_launch.core.errors import ConfigError
from kt_launch.core.provenance import Provenance
from kt_launch.facts.profile import load_config
from kt_launch.facts.adapters import read_adapter_config
from kt_launch.facts.host import HostFacts, gather_host, load_host_facts
from kt_launch.facts.model import ModelConfigError, ModelFacts, read_model_facts
from kt_launch.render.argv import Command, render_command
from kt_launch.core.findings import Finding, info
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.profile import adapter_config_dirs
from kt_launch.resolve.pipeline import resolve
from kt_launch.core.plan import LaunchPlan


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    profile: str
    sets: tuple[str, ...] = ()
    host_facts: str | None = None
    checks: bool = True
    passthrough: tuple[str, ...] = ()


@dataclass
class Outcome:
    config: UserConfig
    host: HostFacts
    plan: LaunchPlan
    command: Command
    model: ModelFacts | None = None
    model_problem: str | None = None

    @property
    def findings(self) -> list[Finding]:
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(self.plan.findings + self.command.findings, key=lambda f: order[f.level])

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)


def host_facts_for(path: str | None, cuda_visible_devices: str | None = None) -> HostFacts:
    """This machine's facts (GPUs as the server will see them), or a recorded host's."""
    if path is None:
        env = dict(os.environ)
        if cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
        return gather_host(env)
    try:
        return load_host_facts(path)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load_request(req: Request, environ: Mapping[str, str] | None = None,
                 warnings: list[str] | None = None) -> tuple[UserConfig, Provenance, Path]:
    environ = os.environ if environ is None else environ
    path = find_profile(req.profile, environ)
    cfg, prov = load_config(path, environ, list(req.sets), warnings)
    return cfg, prov, path


def gather_inputs(req: Request, environ: Mapping[str, str] | None = None) -> tuple[UserConfig, ResolveInput]:
    warnings: list[str] = []
    cfg, prov, path = load_request(req, environ, warnings)
    host = host_facts_for(req.host_facts, cfg.runtime.cuda_visible_devices)
    model = problem = None
    adapters = {}
    artifacts = weights = None
    if req.checks:
        try:
            model = read_model_facts(cfg.model.path)
        except ModelConfigError as e:
            problem = str(e)
        for d in adapter_config_dirs(cfg):
            a = read_adapter_config(d)
            if a is not None:
                adapters[d] = a
        from kt_launch.facts.artifacts import gather_artifacts  # not imported under --no-check

        artifacts = gather_artifacts(cfg)
        from kt_launch.facts.weights import weight_bytes

        weights = weight_bytes(artifacts.model, model)
    inp = ResolveInput(
        config=cfg, provenance=prov, host=host, current_python=sys.executable, model=model, model_problem=problem,
        adapters=adapters, artifacts=artifacts, sglang=_sglang_facts(cfg, req.checks), tuned=_tuned(cfg, host, model),
        passthrough=tuple(req.passthrough), checks=req.checks, profile_path=str(path), input_warnings=tuple(warnings),
        weights=weights,
    )
    return cfg, inp


def _sglang_facts(cfg: UserConfig, checks: bool):
    """The installed SGLang's real parser, from a subprocess in runtime.python (cached on disk).

    Skipped under --no-check with an explicit flavour: planning for another machine needs no local SGLang."""
    if not checks and cfg.runtime.flavor != "auto":
        return None
    from kt_launch.facts.sglang import SglangFacts, read_sglang_facts

    python = cfg.runtime.python or sys.executable
    if python == sys.executable and importlib.util.find_spec("sglang") is None:  # no subprocess needed to say no
        return SglangFacts.failed(python, "not_installed", f"sglang is not installed in {python}")
    return read_sglang_facts(python)


def _tuned(cfg: UserConfig, host: HostFacts, model: ModelFacts | None):
    """The `kt-launch tune` result for this host, model shape and effective method, if one was stored.

    An entry of the wrong shape is ignored with a warning on stderr (it names the file and the field)."""
    if model is None:
        return None
    from kt_launch.facts.tuning import lookup_tuned

    method = cfg.moe_lora.sft_method if cfg.moe_lora is not None else (cfg.kt.method or "AMXINT4")
    found = lookup_tuned(host, model.shape_key, method)
    if found.problem:
        sys.stderr.write(f"kt-launch: warning: {found.problem}\n")
    return found.tuned


def plan_request(req: Request, environ: Mapping[str, str] | None = None) -> Outcome:
    cfg, inp = gather_inputs(req, environ)
    plan = resolve(inp)
    if inp.host.notes:
        plan.findings += [info("KT-I102", f"host facts: {n}") for n in inp.host.notes]
    return Outcome(cfg, inp.host, plan, render_command(plan), inp.model, inp.model_problem)
