"""The pipeline at the edge: gather facts (all I/O), resolve (pure), render. Used by every CLI command."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from kt_launch.facts.locate import find_profile
from kt_launch.core.profile import UserConfig
from kt_launch.core.errors import ConfigError
from kt_launch.core.fleet import FleetPlan
from kt_launch.core.local import OVERRIDE_ENV
from kt_launch.core.provenance import Provenance
from kt_launch.facts.profile import load_config
from kt_launch.facts.adapters import read_adapter_config
from kt_launch.facts.host import HostFacts, gather_host, load_host_facts
from kt_launch.facts.model import ModelConfigError, ModelFacts, read_model_facts
from kt_launch.render.argv import Command, render_command
from kt_launch.core.findings import Finding, info
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.profile import adapter_config_dirs, setting
from kt_launch.resolve.methods import effective_method
from kt_launch.resolve.pipeline import resolve
from kt_launch.core.plan import LaunchPlan


@dataclass(frozen=True)
class Request:
    """What the user asked for on the command line."""

    profile: str
    sets: tuple[str, ...] = ()
    host_facts: str | None = None
    checks: bool = True
    model_facts: str | None = None  # a `doctor --model DIR --json` record: the model shape and checkpoint bytes
    passthrough: tuple[str, ...] = ()
    fleet_host: str | None = None  # plan only this fleet.hosts entry's part, on this machine (no router)
    launch: bool = False  # the server is to be started (exec or --supervise), not only planned
    gate: str = "off"  # the install gate on runtime.python: "run" (check, a launch), "cached" (--dry-run), "off"
    sglang_parser: bool = True  # read the installed SGLang's parser; `convert` starts no SGLang (an explicit flavour)

    @property
    def launch_here(self) -> bool:
        """Starting the server on this machine: what only warns a planner is then an error (resolve/launch.py)."""
        return self.launch and self.host_facts is None

    @property
    def install_blocks(self) -> bool:
        """The install gate's errors block a launch and `check` of this machine; --dry-run and --host-facts plans
        only warn (resolve/install.py)."""
        return self.gate == "run" and self.host_facts is None

    @property
    def runs_here(self) -> bool:
        """The plan is started on this machine: its ports are checked even with --host-facts, whose recorded host
        is then this one."""
        return self.launch


@dataclass
class Outcome:
    config: UserConfig
    host: HostFacts
    plan: LaunchPlan
    command: Command
    model: ModelFacts | None = None
    model_problem: str | None = None
    inputs: ResolveInput | None = None  # what the plan was resolved from (`fit` sizes its rows from the same)

    @property
    def findings(self) -> list[Finding]:
        order = {"error": 0, "warning": 1, "info": 2}
        return sorted(self.plan.findings + self.command.findings, key=lambda f: order[f.level])

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)


def host_facts_for(path: str | None, cuda_visible_devices: str | None = None) -> HostFacts:
    """This machine's facts, or a recorded host's, with the GPUs the server will see: runtime.cuda_visible_devices
    picks from a recorded host's GPUs by CUDA's rules too (`-1` leaves none), never plans on GPUs it hides."""
    if path is None:
        env = dict(os.environ)
        if cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
        return gather_host(env)
    try:
        host = load_host_facts(path)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cuda_visible_devices is None:
        return host
    from dataclasses import replace

    from kt_launch.facts.host import filter_visible

    notes: list[str] = []
    gpus = filter_visible(list(host.gpus), cuda_visible_devices, notes)
    return replace(host, gpus=gpus, notes=host.notes + tuple(f"runtime.cuda_visible_devices: {n}" for n in notes))


@dataclass(frozen=True)
class Loaded:
    """The profile of a request, read once (its --set items, env and files) and handed to whichever plan it needs."""

    config: UserConfig
    provenance: Provenance
    path: Path
    warnings: tuple[str, ...] = ()  # ignored input (an unknown KT_LAUNCH_* variable)


def load_request(req: Request, environ: Mapping[str, str] | None = None) -> Loaded:
    environ = os.environ if environ is None else environ
    path = find_profile(req.profile, environ)
    warnings: list[str] = []
    cfg, prov = load_config(path, environ, list(req.sets), warnings)
    return Loaded(cfg, prov, path, tuple(warnings))


def gather_inputs(req: Request, environ: Mapping[str, str] | None = None,
                  loaded: Loaded | None = None) -> tuple[UserConfig, ResolveInput]:
    environ = os.environ if environ is None else environ
    loaded = loaded or load_request(req, environ)
    cfg, prov, path, warnings = loaded.config, loaded.provenance, loaded.path, loaded.warnings
    host = host_facts_for(req.host_facts, cfg.runtime.cuda_visible_devices)
    model = problem = fix = None
    adapters = {}
    artifacts = weights = None
    if req.checks:
        try:
            model = read_model_facts(cfg.model.path)
        except ModelConfigError as e:
            problem, fix = str(e), e.fix
        for d in adapter_config_dirs(cfg):
            a = read_adapter_config(d)
            if a is not None:
                adapters[d] = a
        from kt_launch.facts.artifacts import gather_artifacts  # not imported under --no-check

        artifacts = gather_artifacts(cfg)
        from kt_launch.facts.weights import weight_bytes

        weights = weight_bytes(artifacts.model, model)
    if req.model_facts is not None:  # replaces config.json and the headers for the plan; file checks still run
        model, weights, problem = *_recorded_model(req.model_facts), None
    sglang = _sglang_facts(cfg, (req.checks or req.launch_here) and req.sglang_parser)
    inp = ResolveInput(
        config=cfg, provenance=prov, host=host, current_python=sys.executable, model=model, model_problem=problem,
        model_fix=fix if problem else None,
        adapters=adapters, artifacts=artifacts, sglang=sglang,
        install=_install_facts(cfg, req, sglang), install_blocks=req.install_blocks,
        tuned=_tuned(cfg, host, model), passthrough=tuple(req.passthrough), checks=req.checks, profile_path=str(path),
        input_warnings=tuple(warnings), weights=weights, launch_here=req.launch_here,
        sglang_config=_sglang_config(cfg, req), stats=_stats(cfg, req, model),
        # the server inherits kt-launch's environment: its KT_KERNEL_CPU_VARIANT picks kt-kernel's build, but only
        # a plan for this machine runs with it (a --host-facts host is another machine with its own environment)
        inherited_cpu_variant=environ.get(OVERRIDE_ENV) if req.host_facts is None else None,
    )
    return cfg, inp


def _stats(cfg: UserConfig, req: Request, model: ModelFacts | None):
    """kt.expert_stats (or the model's calibration, for kt.expert_placement auto/frequency), found and checked in
    runtime.python: by a worker for `check` and a launch (cached by the file's identity), only from the cache for
    --dry-run and the other commands, not at all under --no-check. None when the placement needs no stats."""
    if cfg.kt.expert_stats is None and cfg.kt.expert_placement not in ("auto", "frequency"):
        return None
    from kt_launch.facts.expert_stats import gather_stats

    gate = "off" if not (req.checks or req.launch_here) else ("run" if req.gate == "run" else "cached")
    return gather_stats(cfg, model, gate)


def _sglang_config(cfg: UserConfig, req: Request):
    """SGLang's own `--config FILE` among the arguments kt-launch passes on, read (not under --no-check unless
    the server starts here), so render can judge its keys like flags."""
    args = [*(str(a) for a in cfg.server.extra_args or ()), *req.passthrough]
    if "--config" not in args:
        return None
    from kt_launch.facts.sglang_config import read_sglang_config

    return read_sglang_config(args, req.checks or req.launch_here)


def _demo_not_built(cfg: UserConfig, inp: ResolveInput) -> list[Finding]:
    """KT-I150: the bundled demo profile, run where its synthetic tree was not built (from the wheel, in another
    directory): say how to build it, next to the missing-file errors."""
    from kt_launch.facts.locate import is_bundled_demo

    if not is_bundled_demo(Path(inp.profile_path)) or os.path.exists(cfg.model.path):
        return []
    return [info("KT-I150", f"--profile demo is the bundled demo: it reads a tiny synthetic model under "
                 f"{os.path.dirname(cfg.model.path) or '.'}/ (relative to this directory), which is not built here",
                 "build it from a kt-launch source checkout: `make demo` there, or `python CHECKOUT/devtools/synthetic.py "
                 "demo/` here (the installed package holds no test fixtures, so it cannot build it); then run the "
                 "command again from the directory holding demo/")]


def _recorded_model(path: str) -> tuple[ModelFacts, object]:
    from kt_launch.facts.model_record import load_model_facts

    try:
        return load_model_facts(path)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _sglang_facts(cfg: UserConfig, checks: bool):
    """The installed SGLang's real parser, from a subprocess in runtime.python (cached on disk).

    Skipped under --no-check with an explicit flavour, unless the server is to start here: planning for another
    machine needs no local SGLang, a launch does."""
    if not checks and cfg.runtime.flavor != "auto":
        return None
    from kt_launch.facts.sglang import SglangFacts, read_sglang_facts

    python = cfg.runtime.python or sys.executable
    if python == sys.executable and importlib.util.find_spec("sglang") is None:  # no subprocess needed to say no
        return SglangFacts.failed(python, "not_installed", f"sglang is not installed in {python}")
    return read_sglang_facts(python)


def _install_facts(cfg: UserConfig, req: Request, sglang):
    """The install gate on runtime.python (facts/install.py): for `check` and a launch, the cached answer or one
    worker run; for --dry-run only a cached answer (a cold one costs 3-30 s: the plan says it was not checked).

    Skipped where there is nothing to judge: no check wanted (--no-check, unless the server starts here), an interpreter that cannot run (KT-E250 says so), or
    kt-launch's own interpreter without sglang and kt_kernel (no process needed to know)."""
    if req.gate == "off" or not (req.checks or req.launch_here):
        return None
    if sglang is not None and sglang.error_kind == "interpreter_missing":
        return None
    python = cfg.runtime.python or sys.executable
    if python == sys.executable and all(importlib.util.find_spec(m) is None for m in ("sglang", "kt_kernel")):
        return None
    from kt_launch.facts.install import cached_install_facts, read_install_facts, server_env

    env = server_env(os.environ, cfg.runtime.env)
    if req.gate == "run":
        return read_install_facts(python, env=env)
    from kt_launch.core.install import InstallFacts

    return cached_install_facts(python, env=env) or InstallFacts.not_judged(
        python, "--dry-run reads only a cached answer, and there is none for this install yet")


def _tuned(cfg: UserConfig, host: HostFacts, model: ModelFacts | None):
    """The `kt-launch tune` result for this host, model shape and effective method, if one was stored.

    An entry of the wrong shape is ignored with a warning on stderr (it names the file and the field)."""
    if model is None:
        return None
    from kt_launch.facts.tuning import lookup_tuned

    method = effective_method(lambda key: setting(cfg, key))  # the plan's rule, on the profile's values
    found = lookup_tuned(host, model.shape_key, method)
    if found.problem:
        sys.stderr.write(f"kt-launch: warning: {found.problem}\n")
    return found.tuned


def plan_request(req: Request, environ: Mapping[str, str] | None = None, loaded: Loaded | None = None) -> Outcome:
    cfg, inp = gather_inputs(req, environ, loaded)
    plan = resolve(inp)
    if inp.host.notes:
        plan.findings += [info("KT-I102", f"host facts: {n}") for n in inp.host.notes]
    plan.findings += _demo_not_built(cfg, inp)
    return Outcome(cfg, inp.host, plan, render_command(plan), inp.model, inp.model_problem, inp)


# ---------------------------------------------------------------------------------------
# Fleet: several instances behind the SGLang router (profile section `fleet`)
# ---------------------------------------------------------------------------------------

@dataclass
class FleetOutcome:
    config: UserConfig
    plan: FleetPlan
    commands: list[Command]
    router_available: bool = True  # False: fleet.router.python has no sglang-router (KT-W710); --supervise stops
    local_host: HostFacts | None = None  # this machine's facts (or --host-facts): where replicas are placed

    @property
    def ok(self) -> bool:
        from kt_launch.render.fleet import fleet_ok

        return fleet_ok(self.plan, self.commands)


def plan_fleet(req: Request, environ: Mapping[str, str] | None = None, loaded: Loaded | None = None) -> FleetOutcome:
    """Gather the facts of every host of the fleet (this machine's GPUs with their NUMA nodes, the recorded
    facts of fleet.hosts, this machine's ports, the router's interpreter), then plan (pure) and render."""
    from kt_launch.facts.router import router_importable
    from kt_launch.render.fleet import fleet_secrets, instance_command
    from kt_launch.render.redact import redact_launcher_argv
    from kt_launch.resolve.fleet import busy_port_findings, listeners, resolve_fleet, router_missing

    environ = os.environ if environ is None else environ
    cfg, inp = gather_inputs(req, environ, loaded)
    fleet = cfg.fleet
    if fleet is None:
        raise ConfigError("--fleet-host needs a `fleet` section in the profile")
    local = _fleet_local_facts(req, environ)
    inp = replace(inp, host=local)
    visible = cfg.runtime.cuda_visible_devices
    if visible is None and req.host_facts is None:
        visible = environ.get("CUDA_VISIBLE_DEVICES")
    hosts, commands = _fleet_hosts(req, inp, local, visible)
    python = fleet.router.python or cfg.runtime.python or sys.executable
    plan = resolve_fleet(inp, hosts, router_python=python, host_commands=commands,
                         with_router=req.fleet_host is None)
    if req.host_facts is None or req.runs_here:  # this machine's ports say nothing of a host planned from afar
        mine = listeners(plan.instances, plan.router, every=req.fleet_host is not None)
        plan.findings += busy_port_findings(mine, _port_status(mine))
    missing = [router_missing(python)] if plan.router is not None and not router_importable(python) else []
    plan.findings += missing
    out = [instance_command(i) for i in plan.instances]
    secrets = fleet_secrets(plan, out)  # every output path prints the host commands: mask them once, here
    plan.hosts = [replace(h, argv=redact_launcher_argv(h.argv, secrets)) for h in plan.hosts]
    return FleetOutcome(cfg, plan, out, router_available=not missing, local_host=local)


def _fleet_hosts(req: Request, inp: ResolveInput, local: HostFacts, visible: str | None):
    """The hosts to plan (HostInput each) and the command each other host runs: with --fleet-host only that
    entry, on this machine's live facts; else this machine, then every fleet.hosts entry from its recorded facts."""
    from kt_launch.core.fleet import LOCAL
    from kt_launch.resolve.fleet import HostInput

    fleet = inp.config.fleet
    hosts: list[HostInput] = []
    commands: dict[str, tuple[str, ...]] = {}
    if req.fleet_host is not None:  # this machine is that host: its part only, with its live facts
        entry = next((h for h in fleet.hosts if h.name == req.fleet_host), None)
        if entry is None:
            names = [h.name for h in fleet.hosts] or "none"
            raise ConfigError(f"--fleet-host {req.fleet_host}: no such entry in fleet.hosts (names: {names})")
        hosts.append(HostInput(entry.name, local, entry.replicas, entry.address, entry.address, visible))
    else:
        hosts.append(HostInput(LOCAL, local, fleet.replicas, "127.0.0.1", "127.0.0.1", visible, local=True))
        base = _hosts_base(inp)
        for i, entry in enumerate(fleet.hosts):
            path = Path(entry.host_facts)
            path = path if path.is_absolute() else base / path
            try:
                facts = load_host_facts(path)
            except ValueError as e:
                raise ConfigError(f"fleet.hosts[{i}] ({entry.name}).host_facts: {e}") from None
            hosts.append(HostInput(entry.name, replace(facts, source=entry.name), entry.replicas, entry.address,
                                   entry.address))
            commands[entry.name] = _host_command(req, entry.name)
    return hosts, commands


def _hosts_base(inp: ResolveInput) -> Path:
    """What a relative fleet.hosts[].host_facts is relative to: the profile file that wrote fleet.hosts (a parent
    of `extends` has its own folder), else the profile's folder."""
    origin = inp.provenance.of("fleet.hosts")
    if origin is not None and origin.source == "profile" and origin.where:
        return Path(origin.where).parent
    return Path(inp.profile_path).parent if inp.profile_path else Path.cwd()


def _fleet_local_facts(req: Request, environ: Mapping[str, str]) -> HostFacts:
    """This machine with every GPU in nvidia-smi's numbering (the fleet gives each replica its own
    CUDA_VISIBLE_DEVICES), or the recorded host of --host-facts."""
    if req.host_facts is not None:
        return host_facts_for(req.host_facts)
    env = {k: v for k, v in environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return gather_host(env)


def _host_command(req: Request, name: str) -> tuple[str, ...]:
    """What to run on another host: the same profile and settings, that host's part, supervised. Values go in the
    `--opt=VALUE` form, so a host named `--set` or a profile path starting with `-` stays a value (a --set item is
    taken whole by the command line whatever it holds)."""
    argv = ["kt-launch", f"--profile={req.profile}", f"--fleet-host={name}"]
    for item in req.sets:  # secrets are masked by plan_fleet (render/redact.redact_launcher_argv)
        argv += ["--set", item]
    if not req.checks:
        argv.append("--no-check")
    argv.append("--supervise")
    if req.passthrough:
        argv += ["--", *req.passthrough]
    return tuple(argv)


def _port_status(items: list[tuple[str, str, int]]) -> dict[tuple[str, int], str]:
    """Whether each listener of this machine (the router, the local replicas) could bind now."""
    from kt_launch.facts.artifacts import probe_port

    out = {}
    for _, host, port in items:
        if 1 <= port <= 65535:
            out[(host, port)] = probe_port(host, port).status
    return out
