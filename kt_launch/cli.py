"""Command line: parse argv, run the pipeline, map outcomes to exit codes (0 ok, 2 invalid input, 3 plan errors)."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from kt_launch import __version__
from kt_launch.core.errors import ConfigError

EXIT_OK, EXIT_INVALID, EXIT_PLAN = 0, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: exit 2 with a message, like every invalid input
        raise ConfigError(f"{self.prog}: {message}")


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, metavar="PATH|NAME", help="profile YAML, or a name in ./configs, "
                   "$KT_LAUNCH_PROFILE_DIR, ~/.config/kt-launch/profiles")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set kt.cpuinfer=48 (highest precedence)")
    p.add_argument("--host-facts", metavar="FILE", help="plan for a recorded host (`kt-launch doctor --json`)")
    p.add_argument("--no-check", action="store_true", help="skip file-system checks (paths need not exist here)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kt-launch", description="Resolve, check and launch SGLang with kt-kernel CPU experts.")
    p.add_argument("--version", action="version", version=f"kt-launch {__version__}")
    _profile_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the resolved command, values and findings; run nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: machine-readable plan")
    p.add_argument("--supervise", action="store_true", help="run SGLang as a supervised child instead of exec: "
                   "forward signals, wait for /health, print the OpenAI URL and a curl, propagate its exit code")
    p.add_argument("--grace-period", type=_seconds, metavar="SECONDS",
                   help="with --supervise: time SGLang gets to exit after a signal before SIGKILL (default 30)")
    p.add_argument("--ready-timeout", type=_seconds, metavar="SECONDS",
                   help="with --supervise: stop SGLang (exit 124) if /health is not 200 by then; 0 = no limit "
                        "(default 3600)")
    p.add_argument("--fail-fast", action="store_true", help="with --supervise and a fleet: stop every instance and "
                   "the router when one replica dies (default: keep serving through the rest)")
    p.add_argument("--fleet-host", metavar="NAME", help="run the part of the profile's fleet that belongs to the "
                   "fleet.hosts entry NAME, on this machine (the command kt-launch prints for that host)")
    return p


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 <= v < 10**9):
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds between 0 and 1e9")
    return v


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    subs = {}
    d = _Parser(prog="kt-launch doctor", description="Facts and verdicts about this machine.")
    d.add_argument("--json", action="store_true", help="host facts in the --host-facts format, plus `findings`")
    d.add_argument("--host-facts", metavar="FILE", help="judge a recorded host instead of this machine")
    d.add_argument("--python", metavar="PY", help="inspect the SGLang in this interpreter: flavour, versions, "
                   "capabilities (from its real parser; cached)")
    subs["doctor"] = d
    c = _Parser(prog="kt-launch check", description="Resolve a profile and run every check; launch nothing.")
    _profile_args(c)
    c.add_argument("--json", action="store_true")
    subs["check"] = c
    for name, what in (("probe", "Run the plan's kt-kernel MoE layer once for real (decode and prefill) and check it "
                                 "against a torch reference, in runtime.python."),
                       ("tune", "Sweep kt.cpuinfer (and the pool layout) with real kt-kernel runs; store the best for "
                                "this host, model shape and method.")):
        b = _Parser(prog=f"kt-launch {name}", description=what)
        b.add_argument("--profile", required=True, metavar="PATH|NAME")
        b.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
        b.add_argument("--python", help="interpreter with torch and kt-kernel (default: runtime.python)")
        b.add_argument("--prefill-qlen", type=int, metavar="N", help="prefill tokens per forward (default: chunk size)")
        b.add_argument("--timeout", type=_seconds, default=600.0, metavar="SECONDS", help="per run (default 600)")
        b.add_argument("--json", action="store_true")
        if name == "probe":
            b.add_argument("--use-weights", action="store_true", help="load the real first MoE layer from disk")
        else:
            b.add_argument("--rounds", type=int, default=2, help="sweeps to take medians over (default 2)")
            b.add_argument("--threads", metavar="N,N,...", help="thread counts to try (default: the host's range)")
            b.add_argument("--no-store", action="store_true", help="do not write the tuning cache")
        subs[name] = b
    f = _Parser(prog="kt-launch fit", description="The largest kt.num_gpu_experts per TP size and KV target "
                "(8k, 32k, 128k tokens) on this host or a recorded one, plus the RAM kt-kernel needs.")
    f.add_argument("--profile", required=True, metavar="PATH|NAME")
    f.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    f.add_argument("--host-facts", metavar="FILE", help="fit for a recorded host (`kt-launch doctor --json`)")
    f.add_argument("--json", action="store_true")
    subs["fit"] = f
    subs["profiles"] = _Parser(prog="kt-launch profiles", description="List every profile --profile NAME can find, "
                               "and where each one is (./configs, $KT_LAUNCH_PROFILE_DIR, user, bundled).")
    s = _Parser(prog="kt-launch schema", description="Print the JSON Schema of profiles.")
    s.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    s.add_argument("--readme", metavar="FILE", help="instead: regenerate the profile key table in FILE (README.md) "
                   "from the option registry")
    subs["schema"] = s
    return subs


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def run() -> None:
    """Console-script entry: a short-lived process, so skip the cyclic GC during start-up (pydantic's imports
    build many objects; collecting them costs ~70 ms) and the interpreter's teardown (~45 ms)."""
    import gc

    gc.disable()
    rc = main()
    try:
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(rc)


# A write to stdout that fails (a full disk, a closed descriptor, a reader that went away) ends the command
# with this code and one line on stderr: the output is incomplete, so it must not look like success.
EXIT_OUTPUT = 1
_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EBADF, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class _Closed:
    """Stands in for a standard stream whose descriptor was closed before kt-launch started (`>&-`)."""

    def __init__(self, name: str):
        self.name = name

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, f"{self.name} is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if sys.stdout is None:
        sys.stdout = _Closed("stdout")
    if sys.stderr is None:
        sys.stderr = _Sink()
    from kt_launch.facts.console import safe_output

    safe_output()  # a non-UTF-8 byte in a path is printed as \udcff, never a UnicodeEncodeError
    try:
        rc = _main(argv)
        sys.stdout.flush()  # a full disk shows up here for output that fit the buffer
        return rc
    except ConfigError as e:
        _say(f"kt-launch: error: {e}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        _say("kt-launch: interrupted")
        return 130
    except OSError as e:
        if not (isinstance(e, BrokenPipeError) or e.errno in _OUTPUT_ERRNOS):
            raise
        _discard_stdout()
        _say(f"kt-launch: error: cannot write the output to stdout ({e.strerror or e}); it is incomplete")
        return EXIT_OUTPUT


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError, AttributeError):
        pass


def _discard_stdout() -> None:
    """Drop what is still buffered for a stdout that cannot be written, so no later flush fails again."""
    try:
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def _main(argv: list[str]) -> int:
    own, passthrough = _split_passthrough(argv)
    subs = _subparsers()
    if own and own[0] in subs:
        args = subs[own[0]].parse_args(own[1:])
        return getattr(sys.modules[__name__], f"cmd_{own[0]}")(args, passthrough)
    args = build_parser().parse_args(own)
    if args.json and not args.dry_run:
        raise ConfigError("--json needs --dry-run (or use `kt-launch check --json`)")
    return cmd_launch(args, passthrough)


def cmd_probe(args, passthrough) -> int:
    from kt_launch.backend.commands import cmd_probe as run

    return run(args, passthrough)


def cmd_tune(args, passthrough) -> int:
    from kt_launch.backend.commands import cmd_tune as run

    return run(args, passthrough)


def _request(args, passthrough):
    from kt_launch.app import Request

    return Request(profile=args.profile, sets=tuple(args.sets), host_facts=args.host_facts,
                   checks=not args.no_check, passthrough=tuple(passthrough),
                   fleet_host=getattr(args, "fleet_host", None))


def cmd_launch(args, passthrough) -> int:
    from kt_launch.app import plan_request
    from kt_launch.render.text import findings_text, plan_json, plan_text

    supervised = getattr(args, "supervise", False)
    if not supervised and (getattr(args, "grace_period", None) is not None
                           or getattr(args, "ready_timeout", None) is not None):
        raise ConfigError("--grace-period and --ready-timeout need --supervise (exec hands the process over)")
    req = _request(args, passthrough)
    if req.fleet_host is not None or _has_fleet(req):
        return cmd_fleet(args, req)
    if getattr(args, "fail_fast", False):
        raise ConfigError("--fail-fast needs a profile with a `fleet` section (and --supervise)")
    out = plan_request(req)
    if args.dry_run:
        sys.stdout.write(plan_json(out.plan, out.command, out.findings) + "\n" if args.json
                         else plan_text(out.plan, out.command, out.findings))
        return EXIT_OK if out.ok else EXIT_PLAN
    from kt_launch.render.redact import safe_findings

    if not out.ok:
        sys.stderr.write(findings_text(safe_findings(out.command, out.findings)))
        sys.stderr.write("kt-launch: the plan has errors; nothing was launched (see --dry-run)\n")
        return EXIT_PLAN
    if args.host_facts:
        from kt_launch.run.supervise import host_facts_warning

        sys.stderr.write(host_facts_warning(args.host_facts))
    if supervised:
        import gc

        from kt_launch.run.supervise import launch_supervised

        gc.enable()  # a supervisor may run for days

        return launch_supervised(out, args)
    from kt_launch.run.execute import exec_command

    return exec_command(out.command, safe_findings(out.command, out.findings))


def _has_fleet(req) -> bool:
    from kt_launch.app import has_fleet

    return has_fleet(req)


def cmd_fleet(args, req) -> int:
    """The `fleet` branch of a launch: dry-run text/JSON, or run the local instances and the router supervised.
    A fleet is several processes, so it needs --supervise (there is no single process to exec)."""
    from kt_launch.app import plan_fleet
    from kt_launch.render.fleet import fleet_json, fleet_text

    if getattr(args, "fail_fast", False) and not args.supervise:
        raise ConfigError("--fail-fast needs --supervise")
    out = plan_fleet(req)
    if args.dry_run:
        sys.stdout.write(fleet_json(out.plan, out.commands) + "\n" if args.json else fleet_text(out.plan, out.commands))
        return EXIT_OK if out.ok else EXIT_PLAN
    if not out.ok:
        from kt_launch.render.fleet import fleet_errors
        from kt_launch.render.text import findings_text

        sys.stderr.write(findings_text(fleet_errors(out.plan, out.commands)))
        sys.stderr.write("kt-launch: the fleet plan has errors; nothing was launched (see --dry-run)\n")
        return EXIT_PLAN
    if not args.supervise:
        raise ConfigError("a fleet runs several processes: use --supervise (or --dry-run to see the commands)")
    if args.host_facts:
        from kt_launch.run.supervise import host_facts_warning

        sys.stderr.write(host_facts_warning(args.host_facts))
    import gc

    from kt_launch.run.fleet_supervise import launch_fleet

    gc.enable()
    return launch_fleet(out, args)


def cmd_check(args, passthrough) -> int:
    from kt_launch.app import plan_request
    from kt_launch.render.text import findings_text, plan_json

    out = plan_request(_request(args, passthrough))
    if args.json:
        sys.stdout.write(plan_json(out.plan, out.command, out.findings) + "\n")
    else:
        from kt_launch.render.redact import safe_findings

        sys.stdout.write(findings_text(safe_findings(out.command, out.findings)))
    return EXIT_OK if out.ok else EXIT_PLAN


def cmd_doctor(args, passthrough) -> int:
    from kt_launch.doctor import run_doctor

    return run_doctor(args)


def cmd_fit(args, passthrough) -> int:
    from kt_launch.fitcmd import run_fit

    return run_fit(args)


def cmd_profiles(args, passthrough) -> int:
    from kt_launch.facts.locate import list_profiles

    rows = list_profiles()
    width = max((len(n) for n, _, _ in rows), default=4)
    for name, where, path in rows:
        sys.stdout.write(f"{name:<{width}}  {where:<24}  {path}\n")
    return EXIT_OK


def cmd_schema(args, passthrough) -> int:
    from kt_launch.render.schema import profile_schema_text

    if getattr(args, "readme", None):
        return _regenerate_readme(args.readme)
    text = profile_schema_text()
    if getattr(args, "output", None):
        from kt_launch.facts.cache import write_output

        try:
            write_output(args.output, text)  # the old file stays whole unless the new one is written whole
        except OSError as e:
            raise ConfigError(f"--output {args.output}: cannot write ({e.strerror or e}); the file was not "
                              "changed") from None
        return EXIT_OK
    sys.stdout.write(text)
    return EXIT_OK


def _regenerate_readme(path: str) -> int:
    from kt_launch.facts.cache import write_output
    from kt_launch.facts.reader import Kind, ReadError, read_bytes
    from kt_launch.render.docs import with_table

    try:
        text = with_table(read_bytes(path, Kind("README", 4 << 20)).decode("utf-8", "replace"))
        if text is None:
            raise ConfigError(f"--readme {path}: no profile-keys markers in the file")
        write_output(path, text)
    except ReadError as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"--readme {path}: cannot write ({e.strerror or e}); the file was not changed") from None
    return EXIT_OK
