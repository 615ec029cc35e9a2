"""Command line: parse argv, dispatch to the command's module (kt_launch/commands/, by its table), and map outcomes
to exit codes (0 ok, 2 invalid input, 3 plan errors, 1 output that could not be written or a crash)."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from kt_launch import __version__
from kt_launch.commands import COMMANDS, LAUNCH, command
from kt_launch.commands.common import EXIT_INVALID, say as _say
from kt_launch.core.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    """Usage errors are ConfigError (exit 2, one line), and an unknown argument gets "did you mean"."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (`{self.prog} --help` lists the options)")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # Required options are checked after unknown ones: `--profle demo` is a typo of --profile (did you mean),
        # not a missing --profile.
        required = [a for a in self._actions if a.required and a.option_strings]
        for a in required:
            a.required = False
        try:
            ns, extras = self.parse_known_args(args, namespace)
        finally:
            for a in required:
                a.required = True
        if extras:
            raise ConfigError(f"{self.prog}: unknown argument {extras[0]!r}{_did_you_mean(self, extras[0])}")
        missing = [a.option_strings[0] for a in required if getattr(ns, a.dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return ns


def _did_you_mean(p: argparse.ArgumentParser, word: str) -> str:
    """The closest option of `p` for an option-like word, the closest command for a bare one (difflib)."""
    from kt_launch.core.nearest import closest
    if word.startswith("-"):
        names = [s for a in p._actions for s in a.option_strings]  # argparse keeps its actions here; no API
        close = closest(word.split("=", 1)[0], names)
        return f"; did you mean {' or '.join(close)}?" if close else f" (`{p.prog} --help` lists the options)"
    close = closest(word, subparsers())
    if close:
        return f"; did you mean `kt-launch {close[0]}`? (a command comes first: kt-launch {close[0]} ...)"
    return " (`kt-launch --help` lists the commands)"


def _model_arg(p) -> None:
    p.add_argument("--model", metavar="NAME", help="the model to ask for (default: the first of GET /v1/models)")


def _client_args(p, timeout: int, api_key_help: str, json_help: str) -> None:
    """--timeout, --api-key-env and --json of the commands that send requests to a running server (smoke, bench)."""
    p.add_argument("--timeout", type=_timeout, default=float(timeout), metavar="SECONDS",
                   help=f"the deadline of each request (default {timeout})")
    p.add_argument("--api-key-env", metavar="VAR", help=api_key_help)
    p.add_argument("--json", action="store_true", help=json_help)


def _profile_args(p: argparse.ArgumentParser, host_facts: bool = True, no_check: bool = True) -> None:
    p.add_argument("--profile", required=True, metavar="PATH|NAME", help="profile YAML, or a NAME (NAME, NAME.yaml "
                   "or NAME.yml) in ./configs, $KT_LAUNCH_PROFILE_DIR, ~/.config/kt-launch/profiles, the bundled ones")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set kt.cpuinfer=48 (highest precedence; repeatable)")
    if host_facts:
        p.add_argument("--host-facts", metavar="FILE", help="plan for a recorded host (`kt-launch doctor --json`)")
        p.add_argument("--model-facts", metavar="FILE", help="plan from a recorded model (`kt-launch doctor --model "
                       "DIR --json`) instead of model.path's config.json and headers, e.g. with --no-check elsewhere")
    if no_check:
        p.add_argument("--no-check", action="store_true", help="skip file-system checks (paths need not exist here)")


def build_parser(subs: dict[str, argparse.ArgumentParser] | None = None) -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<9} {sub.description}" for name, sub in (subs or subparsers()).items())
    p = _Parser(prog="kt-launch", usage="kt-launch [COMMAND] [options] [-- SGLANG-FLAGS...]",
                description="Resolve, check and launch SGLang with kt-kernel CPU experts. Without a command: plan "
                "the profile and exec SGLang (or --dry-run, --supervise).",
                epilog=f"commands (kt-launch COMMAND --help for each):\n{commands}",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"kt-launch {__version__}", help="print the version")
    _profile_args(p)
    p.add_argument("--dry-run", action="store_true", help="print the verdict, the resolved command, findings, values "
                   "and their sources; run nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: machine-readable plan; with --supervise: "
                   "events as JSON lines on stdout, the server's log on stderr (docs/JSON.md)")
    p.add_argument("--supervise", action="store_true", help="run SGLang as a supervised child instead of exec: "
                   "forward signals, wait for /health, print the OpenAI URL and a curl, propagate its exit code")
    _supervise_times(p, "with --supervise: ", "a signal")
    p.add_argument("--fail-fast", action="store_true", help="with --supervise and a fleet: stop every instance and "
                   "the router when one replica dies (default: keep serving through the rest)")
    p.add_argument("--restart", choices=("no", "on-failure"), help="with --supervise: restart SGLang (or a fleet "
                   "replica) that dies on its own, with exponential backoff from 1 s (default no)")
    p.add_argument("--max-restarts", type=_count(0, 1000), metavar="N",
                   help="with --restart on-failure: at most N restarts "
                   "of one process within 10 minutes, then it stays down (default 3)")
    p.add_argument("--smoke", choices=("off", "warn", "on"), help="with --supervise: once /health answers, send "
                   "2-3 requests and judge the answers (README: Smoke test); on = stop the server and exit 4 when "
                   "one fails, warn = a warning, keep serving (default on)")
    p.add_argument("--smoke-timeout", type=_timeout, metavar="SECONDS",
                   help="with --supervise: the deadline of each smoke request (default 300)")
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


def _timeout(text: str) -> float:
    """A probe/tune run limit: 0 would mean "instant" there (unlike --ready-timeout 0, "no limit"), so refuse it."""
    v = _seconds(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return v


def _supervise_times(p: argparse.ArgumentParser, when: str, after: str) -> None:
    """--grace-period and --ready-timeout of every command that supervises a server (run/supervise.options_of)."""
    p.add_argument("--grace-period", type=_seconds, metavar="SECONDS",
                   help=f"{when}time SGLang gets to exit after {after} before SIGKILL (default 30)")
    p.add_argument("--ready-timeout", type=_seconds, metavar="SECONDS",
                   help=f"{when}stop SGLang (exit 124) if /health is not 200 by then; 0 = no limit (default 3600)")


def _count(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text[:40]!r}: give a number from {lo} to {hi}")
        return v
    return parse


def subparsers() -> dict[str, argparse.ArgumentParser]:
    """Every command with a one-line description (what `kt-launch --help` lists)."""
    subs = {}
    c = _Parser(prog="kt-launch check", description="Resolve a profile and run every check; launch nothing.")
    _profile_args(c)
    c.add_argument("--json", action="store_true", help="the plan as JSON, as --dry-run --json prints it")
    subs["check"] = c
    for name, what in (("probe", "Run the plan's kt-kernel MoE layer once for real and check it against torch."),
                       ("tune", "Measure the best kt.cpuinfer (and pool layout) on this host and remember it.")):
        b = _Parser(prog=f"kt-launch {name}", description=what,
                    epilog="Runs in runtime.python (or --python), which needs torch and kt-kernel; kt-launch itself "
                    "never imports them.")
        _profile_args(b, host_facts=False, no_check=False)
        b.add_argument("--python", metavar="PY", help="interpreter with torch and kt-kernel (default: runtime.python)")
        b.add_argument("--prefill-qlen", type=_count(1, 1 << 20), metavar="N",
                       help="prefill tokens per forward (default: the plan's chunk size)")
        b.add_argument("--timeout", type=_timeout, default=600.0, metavar="SECONDS",
                       help="limit per kt-kernel run (default 600)")
        b.add_argument("--json", action="store_true", help="machine-readable result")
        if name == "probe":
            b.add_argument("--use-weights", action="store_true", help="load the real first MoE layer from disk")
        else:
            b.add_argument("--rounds", type=_count(1, 100), default=2, metavar="N",
                           help="sweeps to take medians over (default 2)")
            b.add_argument("--threads", metavar="N,N,...", help="thread counts to try (default: the host's range)")
            b.add_argument("--no-store", action="store_true", help="do not write the tuning cache")
        subs[name] = b
    v = _Parser(prog="kt-launch convert", description="Convert model.path's routed experts to kt.method's CPU format "
                "with kt-kernel's own quantizer.", epilog="BF16, FP8 (128x128 block) or compressed-tensors packed INT4 "
                "(Kimi-K2) experts in; AMXINT8/AMXINT4 "
                "_layer_*/_numa_* dirs out, one MoE layer at a time, resumable, checked by reading layers back with "
                "kt-kernel. Runs in runtime.python (or --python).")
    _profile_args(v, host_facts=False, no_check=False)
    v.add_argument("--out", metavar="DIR", help="where the converted weights go (default: kt.weight_path); never "
                   "inside model.path")
    v.add_argument("--lora-out", metavar="DIR", help="where a raw fused expert LoRA (moe_lora.path, sglang-kt) is "
                   "converted to (default: <moe_lora.path>-sglang)")
    v.add_argument("--method", choices=("AMXINT4", "AMXINT8"), help="the format to write (default: kt.method, or in "
                   "MoE-LoRA mode the base format its SFT method reads)")
    v.add_argument("--python", metavar="PY", help="interpreter with torch and kt-kernel (default: runtime.python)")
    v.add_argument("--json", action="store_true", help="machine-readable summary of the outputs")
    subs["convert"] = v
    f = _Parser(prog="kt-launch fit", description="How many GPU experts fit, per TP size and KV target, and the RAM "
                "kt-kernel needs.", epilog="KV targets: 8k, 32k and 128k tokens; each row has a ready --set line.")
    _profile_args(f, no_check=False)
    f.add_argument("--json", action="store_true", help="machine-readable rows, RAM and findings")
    subs["fit"] = f
    e = _Parser(prog="kt-launch export", description="Write the fleet as Kubernetes manifests, a compose file or "
                "systemd units, one NUMA-pinned replica each.", epilog="From the plan of the fleet's --dry-run (a "
                "profile without a fleet section exports one replica). Secret values never appear: see the output.")
    _profile_args(e)
    e.add_argument("--to", required=True, choices=("kubernetes", "compose", "systemd"), help="the output's kind")
    e.add_argument("-o", "--output", metavar="DIR", help="write the files into DIR (default: print them)")
    e.add_argument("--image", default="kt-launch:latest", metavar="IMAGE", help="container image with kt-launch, "
                   "sglang-kt and sglang-router (kubernetes, compose; default kt-launch:latest)")
    e.add_argument("--namespace", default="default", metavar="NS", help="Kubernetes namespace (default: default)")
    subs["export"] = e
    i = _Parser(prog="kt-launch init", description="Write a first profile for a model dir and this host, every value "
                "explained.", epilog="It holds model.path, the converted kt CPU weights found beside the model that "
                "match the method, each --lora with its adapter_config.json rank and alpha, and every derived value "
                "null with a comment saying what the plan resolves it to now.")
    i.add_argument("model_dir", metavar="MODEL_DIR", help="the HuggingFace model directory (config.json, safetensors); "
                   "written as model.path exactly as given")
    i.add_argument("--lora", action="append", default=[], metavar="PATH", help="a LoRA, by content (repeatable): a "
                   "dir with routed-expert LoRA tensors -> moe_lora.path, flavour sglang-kt; a torch.save .pt "
                   "(converted MoE LoRA) -> moe_lora.path, flavour kt-moe-lora; any other adapter dir -> lora.paths. "
                   "moe_lora.rank/alpha: r and lora_alpha of the adapter_config.json the resolver finds")
    i.add_argument("--method", metavar="M", help="kt.method (AMXINT4, AMXINT8, BF16, LLAMAFILE, ...) or, with a MoE "
                   "LoRA, moe_lora.sft_method (AMXBF16_SFT, AMXINT8_SFT, AMXINT4_SFT); default: the method of the one "
                   "converted weight dir beside the model, else left to the resolver")
    i.add_argument("-o", "--output", metavar="FILE", help="write the profile to FILE (atomically) instead of stdout")
    i.add_argument("--force", action="store_true", help="with -o: replace FILE if it exists (default: refuse, exit 2)")
    i.add_argument("--host-facts", metavar="FILE", help="resolve for a recorded host (`kt-launch doctor --json`)")
    subs["init"] = i
    d = _Parser(prog="kt-launch doctor", description="This machine's facts and verdicts (CPU variant, NUMA, memory, "
                "GPUs, SGLang).")
    d.add_argument("--json", action="store_true", help="host facts in the --host-facts format, plus `findings`")
    d.add_argument("--host-facts", metavar="FILE", help="judge a recorded host instead of this machine")
    d.add_argument("--model", metavar="DIR", help="also record a model dir's facts (config.json, checkpoint bytes by "
                   "role from the safetensors headers) for --model-facts: `doctor --model DIR --json > model.json`")
    d.add_argument("--python", metavar="PY", help="judge the SGLang in this interpreter instead of kt-launch's own: "
                   "flavour, versions, capabilities (from its real parser; cached)")
    subs["doctor"] = d
    subs["profiles"] = _Parser(prog="kt-launch profiles", description="List every profile --profile NAME can find, "
                               "and where it is.")
    s = _Parser(prog="kt-launch schema", description="Print the JSON Schema of profiles.")
    s.add_argument("--output", "-o", metavar="FILE", help="write it to FILE instead of stdout")
    s.add_argument("--readme", metavar="FILE", help="instead: regenerate the generated blocks of FILE (README.md's "
                   "key table, docs/ARCHITECTURE.md's step graph) from the registry and the steps")
    s.add_argument("--events", action="store_true", help="instead: the JSON Schema of --supervise --json's event "
                   "lines (schema/supervise-events.schema.json)")
    s.add_argument("--steps", action="store_true", help="instead: print the resolver's step graph (what each step "
                   "fills and reads, in run order)")
    subs["schema"] = s
    k = _Parser(prog="kt-launch smoke", description="Send the smoke test's requests to a running OpenAI-compatible "
                "server and judge the answers.", epilog="The rule is README's 'Smoke test'; exit 0 when every request "
                "passes, 4 when one fails (as --supervise --smoke on).")
    k.add_argument("--url", required=True, metavar="URL", help="the server's base URL, http://HOST:PORT (or .../v1)")
    _model_arg(k)
    k.add_argument("--completion", action="store_true", help="plain /v1/completions (a model without a chat "
                   "template) instead of chat completions")
    k.add_argument("--prefill-threshold", type=_count(1, 1 << 24), metavar="N", help="also send a prompt longer "
                   "than N tokens (sglang-kt's --kt-gpu-prefill-token-threshold: the layerwise prefill path)")
    _client_args(k, 300, "send the API key held by environment variable VAR (never on the command line, where ps "
                 "shows it)", "machine-readable result (docs/JSON.md)")
    subs["smoke"] = k
    b = _Parser(prog="kt-launch bench", description="Prefill and decode tok/s and TTFT of a running server at 2k, 8k "
                "and 32k input tokens, beside the published figures.", epilog="One request at a time (or "
                "--concurrency N); the setup (model, method, GPU experts, cpuinfer, pools, TP, GPUs, CPU, versions) "
                "from --profile's plan or the server's /server_info. A progress line per length on stderr.")
    b.add_argument("--url", metavar="URL", help="the server's base URL, http://HOST:PORT")
    b.add_argument("--profile", metavar="PATH|NAME", help="bench the server this profile runs (its server.host and "
                   "server.port, or a fleet's router; start it with --supervise first, or give --start) and take the "
                   "setup from its plan")
    b.add_argument("--start", action="store_true", help="with --profile: start the profile's server supervised "
                   "(smoke test included), bench it once ready, then stop it; flags after `--` go to it")
    b.add_argument("--no-check", action="store_true", help="with --start: skip the plan's file-system checks, as "
                   "for a launch")
    _supervise_times(b, "with --start: ", "the bench")
    b.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="with --profile: override one value, as for a launch")
    b.add_argument("--host-facts", metavar="FILE", help="with --profile: the recorded host the server runs on")
    _model_arg(b)
    b.add_argument("--lengths", default="2k,8k,32k", metavar="N,N,...", help="input tokens per row (default "
                   "2k,8k,32k)")
    b.add_argument("--output-tokens", type=_count(2, 1 << 16), default=128, metavar="N",
                   help="tokens to decode per request (default 128)")
    b.add_argument("--concurrency", type=_count(1, 256), default=1, metavar="N", help="requests at once per row "
                   "(default 1)")
    _client_args(b, 1800, "with --url: send the API key held by environment variable VAR (--profile sends the "
                 "profile's server.api_key)", "machine-readable rows and setup (docs/JSON.md)")
    subs["bench"] = b
    k = _Parser(prog="kt-launch calibrate", description="Record which experts a workload routes to (SGLang's "
                "recorder) and keep the counts for frequency placement.", epilog="Starts the profile's server "
                "supervised with --expert-distribution-recorder-mode stat, runs the workload between "
                "/start_expert_distribution_record and /dump_expert_distribution_record, stops the server, checks the "
                ".pt in runtime.python and stores it in the calibration cache under the model's fingerprint and "
                "--name. The next plan with kt.expert_placement: auto uses it.")
    _profile_args(k)
    k.add_argument("--python", metavar="PY", help="interpreter with torch (and kt-kernel) that checks the recorded "
                   "file (default: runtime.python)")
    k.add_argument("--prompts", metavar="FILE", help="the workload: JSONL (one {\"messages\": [...]} or [...] "
                   "of chat messages, or a JSON string, a line) or plain text (one prompt a line); default: a small "
                   "mixed set (chat, code, maths, summary, translation)")
    k.add_argument("--requests", type=_count(1, 100_000), metavar="N", help="chat requests to send, cycling "
                   "through the prompts (default: one per prompt)")
    k.add_argument("--max-tokens", type=_count(1, 1 << 20), default=256, metavar="N",
                   help="max_tokens of each request (default 256)")
    k.add_argument("--name", default="default", metavar="WORKLOAD", help="the workload's name in the cache "
                   "(default: default); kt.expert_stats: WORKLOAD picks it")
    k.add_argument("--list", action="store_true", help="list this model's calibrations and exit (starts nothing)")
    _supervise_times(k, "", "the run")
    k.add_argument("--request-timeout", type=_timeout, default=600.0, metavar="SECONDS",
                   help="limit per request of the workload (default 600)")
    k.add_argument("--json", action="store_true", help="machine-readable result (or list)")
    subs["calibrate"] = k
    return subs


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
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
    from kt_launch.core.errors import Stopped
    from kt_launch.facts.worker import stop_on_signals

    try:
        with stop_on_signals():  # SIGTERM/SIGHUP: the children are stopped on the way out, then 128 + N
            rc = _main(argv)
        sys.stdout.flush()  # a full disk shows up here for output that fit the buffer
        return rc
    except ConfigError as e:
        _say(f"kt-launch: error: {e}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        _say("kt-launch: interrupted")
        return 130
    except Stopped as e:
        _say(f"kt-launch: stopped by {e.name}")
        return e.exit_code
    except OSError as e:
        if not (isinstance(e, BrokenPipeError) or e.errno in _OUTPUT_ERRNOS):
            return _crashed(e)
        _discard_stdout()
        _say(f"kt-launch: error: cannot write the output to stdout ({e.strerror or e}); it is incomplete")
        return EXIT_OUTPUT
    except Exception as e:  # a bug of kt-launch: one line for the user, the traceback in a file for the report
        return _crashed(e)


def _crashed(e: BaseException) -> int:
    """Save the traceback (secrets of the environment masked) to a crash file in the cache dir; say where."""
    import time
    import traceback

    from kt_launch.core.secrets import env_secret_values, scrub  # the one redactor, without the registry

    secrets = env_secret_values(os.environ)

    def masked(text: str) -> str:
        return scrub(text, secrets)

    text = masked("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    where = "(could not be saved)"
    try:
        from kt_launch.facts.cache import cache_dir, write_output

        folder = cache_dir()
        if folder is None:
            where = "(not saved: no usable cache folder; set KT_LAUNCH_CACHE_DIR)"
        else:
            path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_output(str(path), f"kt-launch {__version__}\n{text}")  # no argv: --set may carry a secret
            where = str(path)
    except Exception:  # the report of a crash must not crash
        pass
    _say(f"kt-launch: internal error: {type(e).__name__}: {masked(str(e))[:200]}; this is a bug of kt-launch. "
         f"The traceback is in {where}; please attach it to a report")
    return EXIT_OUTPUT


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


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


def take_sets(own: list[str]) -> tuple[list[str], list[str]]:
    """`--set KEY=VALUE` / `--set=KEY=VALUE` items taken out before argparse, whose option matching is quadratic in
    the number of options given (20 000 --set items took minutes); the rest is parsed as usual."""
    rest, sets, i = [], [], 0
    while i < len(own):
        a = own[i]
        if a == "--set":
            if i + 1 >= len(own):
                raise ConfigError("--set needs KEY=VALUE (e.g. --set kt.cpuinfer=48)")
            sets.append(own[i + 1])
            i += 2
            continue
        if a.startswith("--set="):
            sets.append(a[len("--set="):])
        else:
            rest.append(a)
        i += 1
    return rest, sets


def _main(argv: list[str]) -> int:
    own, passthrough = split_passthrough(argv)
    own, sets = take_sets(own)
    subs = subparsers()
    if not own and not passthrough and not sets:  # `kt-launch` alone: what it can do, not one missing option
        sys.stderr.write(build_parser(subs).format_help())
        return EXIT_INVALID
    if own and own[0] in subs:
        args = subs[own[0]].parse_args(own[1:])
        if sets and not hasattr(args, "sets"):
            raise ConfigError(f"kt-launch {own[0]} takes no --set")
        args.sets = sets
        return command(COMMANDS[own[0]])(args, passthrough)
    if own and not own[0].startswith("-"):
        raise ConfigError(f"unknown command {own[0][:60]!r}{_did_you_mean(build_parser(subs), own[0])}")
    args = build_parser(subs).parse_args(own)
    args.sets = sets
    if args.json and not (args.dry_run or getattr(args, "supervise", False)):
        raise ConfigError("--json needs --dry-run (the plan) or --supervise (its events; docs/JSON.md), or use "
                          "`kt-launch check --json`")
    return command(LAUNCH)(args, passthrough)
