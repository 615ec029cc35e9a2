"""`kt-launch bench --url URL | --profile P`: prefill and decode tok/s and TTFT at 2k, 8k and 32k input tokens (the
tutorials' table), one request at a time (or --concurrency N at once), against a running server; with the setup
that makes a figure comparable and the published figure of the same model and hardware class beside.

--profile P benches the server that profile runs (its server.host / server.port, started with `kt-launch --profile P
--supervise`; a fleet: its router), and takes the setup from its plan; with --start it starts that server itself, supervised as a launch
is (run/supervise.py, smoke test included), benches it once it is ready and stops it. --url takes the setup from the
server's /server_info and /model_info (and this machine's CPU and GPUs when the URL is on loopback). Exit 0, 4 when a
request failed (KT-E570), 2 for bad arguments, 3 when --start's plan has errors (nothing is started)."""

from __future__ import annotations

import sys

from kt_launch.commands.common import EXIT_OK, say, text_width
from kt_launch.core.errors import ConfigError


MAX_LENGTHS = 16


def lengths_of(text: str) -> list[int]:
    """--lengths: token counts (ASCII digits, an optional k), each once, at most MAX_LENGTHS; exit 2 naming the
    part otherwise."""
    shown = repr(text[:80]) + ("..." if len(text) > 80 else "")
    parts = text.split(",")
    if len(parts) > MAX_LENGTHS:
        raise ConfigError(f"--lengths {shown}: {len(parts)} lengths; give at most {MAX_LENGTHS}")
    out: list[int] = []
    for part in parts:
        p = part.strip().lower()
        digits = p[:-1] if p.endswith("k") else p
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 9):
            raise ConfigError(f"--lengths {shown}: {part.strip()[:40]!r} is not a token count (e.g. 2k,8k,32k)")
        n = int(digits) * (1024 if p.endswith("k") else 1)
        if not 16 <= n <= 1 << 21:
            raise ConfigError(f"--lengths {shown}: {part.strip()!r} is outside 16 .. 2M tokens")
        if n in out:
            raise ConfigError(f"--lengths {shown}: {part.strip()!r} is given twice ({n} tokens); give each once")
        out.append(n)
    return out


def _request(args, passthrough, start: bool):
    """The plan request of --profile: the launch's own (checks, install gate) with --start, else a --no-check plan
    that only says where the server listens and how it was set up."""
    from types import SimpleNamespace

    from kt_launch.commands.common import request

    ns = SimpleNamespace(profile=args.profile, sets=args.sets, host_facts=args.host_facts,
                         no_check=args.no_check or not start, model_facts=None, fleet_host=None)
    return request(ns, passthrough, launch=start, gate="run" if start else "off")


def _from_profile(args) -> tuple[str, dict, str | None]:
    """The base URL, setup and api key of the server the profile runs (its plan; nothing is started). A fleet is
    benched through its router (fleet.router's URL and api key), with the setup of this machine's first replica."""
    from kt_launch.app import plan_fleet, plan_request
    from kt_launch.commands.common import load

    req = _request(args, [], start=False)
    loaded = load(req)
    if loaded.config.fleet is None:
        out = plan_request(req, loaded=loaded)
        return _url(out.plan), _setup(out.plan, out.host), out.plan.get("server.api_key")
    fleet = plan_fleet(req, loaded=loaded)
    router = fleet.plan.router
    if router is None:
        raise ConfigError(f"--profile {args.profile}: the fleet plans no router on this machine; bench the router "
                          "with --url")
    first = fleet.plan.instances[0].plan if fleet.plan.instances else None
    return router.url, _setup(first, fleet.local_host) if first is not None else {}, router.api_key


def _url(plan) -> str:
    from kt_launch.core.options import BY_KEY
    from kt_launch.run.health import base_url

    return base_url(*(plan.get(k, BY_KEY[k].default) for k in ("server.host", "server.port")))


def _setup(plan, host) -> dict:
    """The setup that makes a figure comparable, from a server's plan and the facts of the host it runs on."""
    tp = plan.get("server.tp_size") or 1
    meta = {"model": plan.get("model.served_name") or plan.get("model.path"), "method": plan.get("kt.method"),
            "gpu_experts_per_layer": plan.get("kt.num_gpu_experts"), "cpuinfer": plan.get("kt.cpuinfer"),
            "pools": plan.get("kt.threadpool_count"), "tp_size": tp,
            "gpus": [g.name for g in host.gpus][:tp] if host is not None else [],
            "cpu_model": (host.cpu.model or None) if host is not None else None}
    meta.update(_versions(plan.get("runtime.python")))
    return meta


def _versions(python: str | None) -> dict:
    """kt-kernel's and SGLang's versions from the install gate's cache for that interpreter (never a new run)."""
    if not python:
        return {}
    from kt_launch.facts.install import cached_install_facts

    try:
        facts = cached_install_facts(python)
    except Exception:  # noqa: BLE001 - a cache that cannot be read only leaves the versions unknown
        return {}
    dists = dict(getattr(facts, "dists", ()) or ()) if facts is not None else {}
    return {"kt_kernel_version": dists.get("kt-kernel"),
            "sglang_version": dists.get("sglang-kt") or dists.get("sglang")}


def _from_server(base: str, info: dict, meta: dict) -> dict:
    """Fill what the plan did not say from the server's own /server_info and /model_info (sglang's server args)."""
    import os.path
    from urllib.parse import urlsplit

    model = info.get("served_model_name") or info.get("model_path")
    found = {"model": model if isinstance(model, str) else None, "method": info.get("kt_method"),
             "gpu_experts_per_layer": info.get("kt_num_gpu_experts"), "cpuinfer": info.get("kt_cpuinfer"),
             "pools": info.get("kt_threadpool_count"), "tp_size": info.get("tp_size"),
             "sglang_version": info.get("version")}
    if isinstance(found["model"], str) and found["model"].startswith("/"):
        found["model"] = os.path.basename(found["model"].rstrip("/")) or found["model"]
    for k, v in found.items():
        if meta.get(k) in (None, [], "") and v not in (None, ""):
            meta[k] = v
    host = urlsplit(base).hostname or ""
    if "cpu_model" not in meta and host in ("127.0.0.1", "localhost", "::1"):
        from kt_launch.app import host_facts_for

        facts = host_facts_for(None)
        tp = meta.get("tp_size") if isinstance(meta.get("tp_size"), int) else len(facts.gpus)
        meta["cpu_model"] = facts.cpu.model or None
        meta["gpus"] = [g.name for g in facts.gpus][:tp]
    return meta


def run(args, passthrough) -> int:
    from kt_launch.commands.smoke import api_key_of, base_of

    if bool(args.url) == bool(args.profile):
        raise ConfigError("kt-launch bench: give --url URL or --profile P (one of them)")
    if args.profile is None and (args.sets or args.host_facts or args.start):
        raise ConfigError("--set, --host-facts and --start need --profile")
    if not args.start and (args.no_check or args.grace_period is not None or args.ready_timeout is not None):
        raise ConfigError("--no-check, --grace-period and --ready-timeout go with --start")
    if passthrough and not args.start:
        raise ConfigError("flags after `--` go to the server --start starts: give --start, or drop them")
    lengths = lengths_of(args.lengths)
    if args.profile and args.api_key_env:
        raise ConfigError("--api-key-env goes with --url (--profile sends the profile's server.api_key)")
    if args.start:
        return _started(args, passthrough, lengths)
    if args.profile:
        base, meta, api_key = _from_profile(args)
    else:
        base, meta, api_key = base_of(args.url), {}, api_key_of(args.api_key_env)
    text, code = _bench(base, meta, api_key, args, lengths)
    sys.stdout.write(text)
    return code


def _started(args, passthrough, lengths) -> int:
    """--start: the profile's server started supervised (the launch's plan, install gate and smoke test); the bench
    runs once it is ready, then the server is stopped; stdout holds the table alone (the server's output goes to
    stderr, run/supervise.py)."""
    import gc

    from kt_launch.app import plan_request
    from kt_launch.commands.common import EXIT_PLAN, load
    from kt_launch.render.redact import safe_findings
    from kt_launch.render.text import findings_text
    from kt_launch.run.supervise import Endpoint, options_of, smoke_options, supervise

    req = _request(args, passthrough, start=True)
    loaded = load(req)
    if loaded.config.fleet is not None:
        raise ConfigError(f"--profile {args.profile}: --start starts one server; start the fleet with `kt-launch "
                          "--profile P --supervise`, then bench it through its router with --profile P")
    out = plan_request(req, loaded=loaded)
    meta, api_key = _setup(out.plan, out.host), out.plan.get("server.api_key")  # the URL: the supervisor's own
    if not out.ok:
        sys.stderr.write(findings_text(safe_findings(out.command, out.findings)))
        sys.stderr.write("kt-launch: the plan has errors; nothing was started (see --dry-run)\n")
        return EXIT_PLAN
    done: list[str] = []

    def job(url: str) -> int:
        text, code = _bench(url, dict(meta), api_key, args, lengths)
        done.append(text)
        return code

    opts = options_of(args)
    smoke_options(opts, args, out.plan.get("server.smoke") or "on")
    opts.after_ready = job
    gc.enable()  # the CLI starts without the cyclic GC; a server's lifetime is long
    code = supervise(out.command, out.findings, Endpoint.of(out.plan, out.config), opts=opts,
                     values={k: r.value for k, r in out.plan.values.items()})
    sys.stdout.write("".join(done))
    return code


def _bench(base: str, meta: dict, api_key, args, lengths) -> tuple[str, int]:
    """The rows at each length against the server at `base`: the text (or JSON) and the exit code."""
    import time

    from kt_launch.commands.smoke import first_model, served_model
    from kt_launch.core.findings import error, warning
    from kt_launch.core.smoke import EXIT_SMOKE
    from kt_launch.render.bench import bench_json, bench_text
    from kt_launch.resolve.bench import published_for, row_of
    from kt_launch.run.bench import Prompts, run_length, server_facts

    listed = first_model(base, api_key)
    model = args.model or served_model(listed) or meta.get("model") or "default"
    info = server_facts(base, api_key)
    meta = _from_server(base, info, meta)
    meta["model"] = meta.get("model") or model
    pub = published_for(meta.get("model"), list(meta.get("gpus") or []))
    context = listed.get("max_model_len")  # the server's context length, when it says
    context = context if isinstance(context, int) and not isinstance(context, bool) and context > 0 else None
    prompts = Prompts(base, model, api_key)
    rows, findings = [], []
    for i, length in enumerate(lengths, 1):
        if context is not None and length + args.output_tokens > context:
            findings.append(warning("KT-W570", f"bench: {length} input tokens + {args.output_tokens} output tokens "
                                    f"exceed the server's context length {context}: skipped",
                                    "start the server with a longer context (server.context_length) or leave the "
                                    "length out (--lengths)", {"input_tokens": str(length)}))
            continue
        say(f"kt-launch: bench: {length} input tokens ({i} of {len(lengths)}), {args.concurrency} request(s) "
            f"at a time ...")
        t0 = time.monotonic()
        replies, wall = run_length(base, model, prompts, length, args.concurrency, args.output_tokens,
                                   args.timeout, api_key, i)
        row = row_of(length, replies, wall, pub)
        rows.append(row)
        say(f"kt-launch: bench: {length} input tokens: TTFT {row['ttft_s']} s, prefill {row['prefill_tok_s']} "
            f"tok/s, decode {row['decode_tok_s']} tok/s ({time.monotonic() - t0:.1f}s)")
        if not row["ok"]:
            findings.append(error("KT-E570", f"bench: {length} input tokens: {'; '.join(row['problems'])}",
                                  "run `kt-launch smoke --url URL` against the server; read its log",
                                  {"input_tokens": str(length)}))
            break
    meta["prompt_tokens_counted_by"] = prompts.how if prompts.tokenize is not None else None
    published = None if pub is None else {"model": pub.model, "hardware": pub.hardware, "source": pub.source}
    text = (bench_json(base, meta, rows, published, findings, args.concurrency, args.output_tokens) + "\n"
            if args.json else bench_text(base, meta, rows, published, findings, args.concurrency, text_width()))
    return text, EXIT_OK if rows and all(r["ok"] for r in rows) else EXIT_SMOKE

