"""`kt-launch export --profile P --to kubernetes [-o DIR]`: the fleet's plan (the one `--dry-run` prints) as
files an orchestrator runs. This module does the I/O (the profile file, the YAML dump, the writes); what the
files hold is render/export.py's.

Secrets (server.api_key, secret-named runtime.env entries: core/secrets.py's rule) are taken out of the profile
that goes into the ConfigMap; the pods read them from a Secret whose values the output leaves as placeholders.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from kt_launch.core.errors import ConfigError
from kt_launch.core.fleet import ROUTER_METRICS_PORT

from kt_launch.commands.common import EXIT_INVALID, EXIT_OK, EXIT_PLAN


def run(args, passthrough) -> int:
    """`kt-launch export`: the fleet's plan as Kubernetes manifests, compose files or systemd units."""
    import yaml

    from kt_launch.app import Request, load_request, plan_fleet, plan_request
    from kt_launch.core.secrets import is_secret_name
    from kt_launch.facts.profile import read_profile
    from kt_launch.render import export as ex

    req = Request(profile=args.profile, sets=tuple(args.sets), host_facts=args.host_facts,
                  checks=not args.no_check, model_facts=args.model_facts)
    loaded = load_request(req)
    cfg = loaded.config
    replicas: list[ex.ExportReplica] = []
    unknown: list[str] = []
    if cfg.fleet is not None:
        out = plan_fleet(req, loaded=loaded)
        if not out.ok:
            return _plan_errors(out)
        port = out.plan.instances[0].replica.port if out.plan.instances else cfg.server.port
        from kt_launch.core.fleet import LOCAL

        local = _hostname()
        for inst in out.plan.instances:
            r = inst.replica
            replicas.append(_replica(r.name, local if r.host == LOCAL else r.host, r.nodes,
                                     len(r.cpus) or r.cores, len(r.gpus), inst.plan, unknown,
                                     cpu_ids=tuple(r.cpus), gpu_ids=tuple(r.gpus), port=r.port, listen=r.listen,
                                     host=local if r.host == LOCAL else r.host))
        router_argv = ()
        if out.plan.router is not None:
            from dataclasses import replace as _with

            from kt_launch.render.fleet import router_command

            rs = out.plan.router
            router_argv = tuple(router_command(_with(rs, api_key="$(ROUTER_API_KEY)" if rs.api_key
                                                     else None)).argv)
        router_port = out.plan.router.port if out.plan.router else cfg.server.port
        metrics_port = out.plan.router.metrics_port if out.plan.router else ROUTER_METRICS_PORT
        policy = out.plan.router.policy if out.plan.router else "round_robin"
        first_plan = out.plan.instances[0].plan if out.plan.instances else None
    else:
        single = plan_request(req, loaded=loaded)
        if not single.ok:
            from kt_launch.render.text import findings_text

            sys.stderr.write(findings_text([f for f in single.findings if f.level == "error"]))
            sys.stderr.write("kt-launch: the plan has errors; nothing was exported (see --dry-run)\n")
            return EXIT_PLAN
        plan = first_plan = single.plan
        # kt-kernel maps pool i to node i where kt.numa_nodes is unset (resolve/threads.py)
        nodes = tuple(plan.get("kt.numa_nodes") or range(int(plan.get("kt.threadpool_count") or 1)))
        tp = int(plan.get("server.tp_size") or 1)
        from kt_launch.app import host_facts_for

        host = host_facts_for(req.host_facts, cfg.runtime.cuda_visible_devices)
        mine = {c for n in host.numa if not nodes or n.id in nodes for c in n.cpus} & set(host.cpu.usable_cpus)
        replicas.append(_replica("server", _hostname(), nodes, len(mine) or len(host.cpu.usable_cpus), tp, plan,
                                 unknown, cpu_ids=tuple(sorted(mine)), port=cfg.server.port,
                                 listen=cfg.server.host, host=_hostname()))
        router_argv = ()
        port = router_port = cfg.server.port
        metrics_port = ROUTER_METRICS_PORT
        policy = "round_robin"
    if unknown:
        sys.stderr.write(f"kt-launch: error: the plan's RAM is unknown for {', '.join(unknown)} (the model's size was "
                         "not read): export sizes each pod's memory from it; run without --no-check, or give "
                         "--model-facts\n")
        return EXIT_PLAN

    doc, _ = read_profile(loaded.path)
    doc = copy.deepcopy(doc)
    doc.pop("fleet", None)
    secret_env: list[tuple[str, str]] = []
    api_key = None
    if (doc.get("server") or {}).get("api_key") or cfg.server.api_key:
        (doc.get("server") or {}).pop("api_key", None)
        api_key = "server-api-key"
        secret_env.append(("KT_LAUNCH_SERVER__API_KEY", api_key))  # the profile's env override (core/profile.py)
    env = (doc.get("runtime") or {}).get("env") or {}
    for name in sorted(set(env) | set(cfg.runtime.env or {})):
        if is_secret_name(name):
            env.pop(name, None)
            secret_env.append((name, ex.dns_name(name)))
    # paths as the plan resolved them (a relative path was relative to the profile, which moves into the pod)
    for section, key, value in (("model", "path", cfg.model.path), ("kt", "weight_path", cfg.kt.weight_path)):
        if value and isinstance(doc.get(section), dict) and doc[section].get(key):
            doc[section][key] = str(value)
    if args.to != "systemd" and isinstance(doc.get("runtime"), dict):
        doc["runtime"].pop("python", None)  # this machine's interpreter: the image runs its own
    sets = tuple(item for item in req.sets if not is_secret_name(item.partition("=")[0])
                 and item.partition("=")[0].strip() not in PINNED)  # pinned into the profile below
    stats_dir = _pin_placement(doc, first_plan)
    volumes = tuple(sorted({p for p in (str(cfg.model.path or ""), str(cfg.kt.weight_path or ""), stats_dir)
                            if p.startswith("/")}))
    spec = ex.ExportSpec(fleet=ex.dns_name(loaded.path.stem)[:40], namespace=args.namespace, image=args.image,
                         port=port, router_port=router_port, policy=policy, replicas=tuple(replicas),
                         profile_yaml=yaml.safe_dump(doc, sort_keys=False), secret_env=tuple(secret_env),
                         router_api_key=api_key, volumes=volumes, router_argv=router_argv, sets=sets,
                         router_host=_hostname(), launcher=(sys.executable, "-m", "kt_launch"),
                         metrics_port=metrics_port)
    files = _files(args.to, spec, yaml)
    if args.output:
        from kt_launch.facts.cache import write_output

        folder = Path(args.output)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                write_output(folder / name, text)
        except OSError as e:
            raise ConfigError(f"-o {folder}: {e.strerror or e}") from None
        sys.stderr.write("".join(f"wrote {folder / n}\n" for n in files))
    else:
        for name, text in files.items():
            sys.stdout.write(f"# --- {name}\n{text}")
    return EXIT_OK


def _hostname() -> str:
    import os

    return os.uname().nodename


def _replica(name, hostname, nodes, cpus, gpus, plan, unknown, **where):
    from kt_launch.render.export import ExportReplica

    ram = plan.memory.ram if plan.memory is not None else None
    if ram is None:
        unknown.append(name)
    w = plan.memory.weights if plan.memory is not None else None
    weight = (ram.experts_bytes if ram else 0) + (
        w.expert_bytes + w.replicated_bytes + w.sharded_bytes + w.kv_proj_bytes if w is not None else 0)
    return ExportReplica(name=name, hostname=hostname, nodes=tuple(nodes), cpus=int(cpus), gpus=int(gpus),
                         ram_need_bytes=ram.need_bytes if ram else 0, weight_bytes=weight, **where)


def _plan_errors(out) -> int:
    from kt_launch.render.fleet import fleet_errors
    from kt_launch.render.text import findings_text

    sys.stderr.write(findings_text(fleet_errors(out.plan, out.commands)))
    sys.stderr.write("kt-launch: the fleet plan has errors; nothing was exported (see --dry-run)\n")
    return EXIT_PLAN


def _dumper(yaml):
    """A safe dumper that writes every shared value out in full: no &anchors/*aliases for a reader to trip on."""
    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True
    return NoAliases


def _files(to: str, spec, yaml) -> dict[str, str]:
    from kt_launch.render import export as ex

    if to == "kubernetes":
        head = "".join(f"# {line}\n" if line else "#\n" for line in ex.KUBELET_CHECKLIST.splitlines())
        cmd = ex.secret_command(spec)
        if cmd:
            head += f"# The Secret below holds placeholders ({ex.PLACEHOLDER}); create it with the real values:\n#   {cmd}\n"
        body = yaml.dump_all(ex.kubernetes(spec), Dumper=_dumper(yaml), sort_keys=False)
        return {"kubernetes.yaml": head + body,
                "kubelet-config.yaml": yaml.safe_dump(ex.KUBELET_CONFIG, sort_keys=False),
                "KUBELET.txt": ex.KUBELET_CHECKLIST}
    hosts = list(dict.fromkeys([spec.router_host] + [r.host for r in spec.replicas]))
    files: dict[str, str] = {}
    if spec.secret_env or spec.router_api_key:
        files[ex.COMPOSE_ENV_FILE if to == "compose" else ex.ENV_FILE] = ex.env_file(spec)
    files["profile.yaml" if to == "compose" else f"{spec.fleet}.yaml"] = spec.profile_yaml
    for host in hosts:
        suffix = "" if host == spec.router_host else f"-{ex.dns_name(host)}"
        if to == "compose":
            files[f"compose{suffix}.yaml"] = yaml.dump(ex.compose(spec, host), Dumper=_dumper(yaml), sort_keys=False)
        else:
            for name, text in ex.systemd_units(spec, host).items():
                files[name if not suffix else f"{ex.dns_name(host)}/{name}"] = text
    return files


PINNED = ("kt.expert_placement", "kt.expert_stats")  # resolved here (this machine's calibration cache)


def _pin_placement(doc: dict, plan) -> str:
    """The placement as this plan resolved it, written into the exported profile: `auto` and a calibrated workload
    name are looked up in this machine's cache, which a pod does not have, so the pods get the strategy and the
    stats file's path (its folder is mounted like the model's). Returns that folder, or ""."""
    import os

    if plan is None or not isinstance(doc.get("kt"), dict):
        return ""
    strategy, stats = plan.get("kt.expert_placement"), plan.get("kt.expert_stats")
    if strategy is not None:
        doc["kt"]["expert_placement"] = strategy
    if stats:
        doc["kt"]["expert_stats"] = str(stats)
        return os.path.dirname(str(stats))
    doc["kt"].pop("expert_stats", None) if strategy != "frequency" and "expert_stats" in doc["kt"] else None
    return ""

