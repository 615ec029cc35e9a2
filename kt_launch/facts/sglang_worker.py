"""Introspect the installed SGLang from inside its own interpreter.

Standalone script: ``TARGET_PYTHON /abs/path/sglang_worker.py [facts|parse]``. The target
interpreter need not have kt_launch; this file imports only the standard library until it
imports ``sglang.srt.server_args``. It never calls ``prepare_server_args`` or
``ServerArgs.from_cli_args`` (in sglang-kt these run ``__post_init__``, which reads the model
config and probes the GPU): it builds SGLang's own parser with ``argparse.ArgumentParser()`` +
``ServerArgs.add_cli_args(parser)`` and reads it.

Modes (argv[1]):

``facts`` (default)
    One JSON object on stdout: the distribution that provides the ``sglang`` package
    (``sglang-kt`` or ``sglang``) and its version, kt-kernel's version and KTMoEWrapper's
    parameters (read from ``kt_kernel/experts.py`` with ``ast``; kt_kernel is never imported),
    and every parser option.

``parse``
    stdin holds JSON: a list of argv lists (``[["--model-path", "m", ...], ...]``). Each is
    parsed with ``parser.parse_args(argv)`` on a fresh parser; stdout holds
    ``{"ok": true, "results": [{"ok": true, "namespace": {...}} | {"ok": false, "error": "..."}]}``.
    An argparse rejection is reported as ``{"ok": false, "error": <argparse's message>}``.

Whatever happens, stdout carries exactly one JSON object; a failure is
``{"ok": false, "error_kind": ..., "error": ...}`` with exit status 0 for expected failures
(not installed, import failed) so the caller can tell them from a crash of this script. Anything
SGLang prints while importing goes to stderr.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder (kt_launch/facts) is sys.path[0]: it holds a module named
# sglang.py (the launcher side) that would shadow the real package. Drop it before importing.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

# Reading a parser needs no GPU, but sglang-kt probes the device while importing (a CUDA
# context on GPU 0 of a GPU host). Hide the devices from this process only; the parser's
# defaults do not depend on them. KT_LAUNCH_WORKER_SHOW_GPUS=1 keeps them visible.
GPUS_HIDDEN = os.environ.get("KT_LAUNCH_WORKER_SHOW_GPUS") != "1"
if GPUS_HIDDEN:
    for _var in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        os.environ[_var] = ""

import argparse  # noqa: E402
import ast  # noqa: E402
import enum  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import site  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

SCHEMA = 1
HELP_CHARS = 200
KT_WRAPPER_CLASS = "KTMoEWrapper"


# -- JSON-safe values ------------------------------------------------------------------------


def json_safe(value, depth=0):
    """A JSON value for ``value``: primitives as they are; containers element-wise; anything
    else as ``{"__repr__": repr(value), "__type__": type name}``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"__repr__": repr(value), "__type__": "float"}
    if depth > 8:
        return {"__repr__": repr(value)[:500], "__type__": type(value).__name__}
    if isinstance(value, enum.Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [json_safe(v, depth + 1) for v in value]
        try:
            return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
        except Exception:
            return items
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return {"__repr__": repr(value)[:500], "__type__": type(value).__name__}


def type_name(t):
    if t is None:
        return None
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", None)
    if name is None:
        return type(t).__name__
    return name


def choices_of(choices):
    if choices is None:
        return None
    try:
        if hasattr(choices, "__len__") and len(choices) > 10000:
            return {"__repr__": repr(choices)[:500], "__type__": type(choices).__name__}
        return [json_safe(c) for c in choices]
    except Exception:
        return {"__repr__": repr(choices)[:500], "__type__": type(choices).__name__}


def help_of(text):
    if text is None:
        return None
    text = str(text)
    if text == argparse.SUPPRESS:
        return text
    return text[:HELP_CHARS]


# -- stdout hygiene ----------------------------------------------------------------------------


class _StdoutToStderr:
    """Route fd 1 (and sys.stdout) to stderr while SGLang imports, so that the JSON we print
    at the end is the only thing on the real stdout."""

    def __enter__(self):
        sys.stdout.flush()
        self._saved_fd = os.dup(1)
        os.dup2(2, 1)
        self._saved_obj = sys.stdout
        sys.stdout = sys.stderr
        return self

    def __exit__(self, *exc):
        try:
            sys.stdout.flush()
        except Exception:
            pass
        sys.stdout = self._saved_obj
        os.dup2(self._saved_fd, 1)
        os.close(self._saved_fd)
        return False


def emit(obj):
    data = json.dumps(obj, sort_keys=True, allow_nan=False)
    out = io.open(1, "w", encoding="utf-8", closefd=False)
    out.write(data)
    out.write("\n")
    out.flush()


# -- distributions ---------------------------------------------------------------------------


def _dist_info_dir(dist):
    path = getattr(dist, "_path", None)
    return os.fspath(path) if path is not None else None


def sglang_distribution(sglang_init):
    """(name, version, dist-info dir, all names providing top-level ``sglang``) without
    importing sglang."""
    from importlib import metadata

    names = []
    try:
        names = list(metadata.packages_distributions().get("sglang", []))
    except Exception:
        names = []
    # Older metadata without top_level.txt / RECORD: try the known names.
    for guess in ("sglang-kt", "sglang"):
        if guess not in names:
            try:
                metadata.distribution(guess)
                names.append(guess)
            except metadata.PackageNotFoundError:
                pass
    seen = []
    for n in names:
        if n not in seen:
            seen.append(n)
    found = []
    for name in seen:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        canonical = dist.metadata["Name"] or name
        info_dir = _dist_info_dir(dist)
        owns = False
        try:
            for f in dist.files or ():
                if str(f).replace("\\", "/") == "sglang/__init__.py":
                    owns = os.path.realpath(str(dist.locate_file(f))) == os.path.realpath(sglang_init)
                    break
        except Exception:
            owns = False
        try:
            mtime = os.stat(info_dir).st_mtime if info_dir else 0.0
        except OSError:
            mtime = 0.0
        found.append((owns, mtime, canonical, dist.version, info_dir))
    if not found:
        return None, None, None, []
    # The one whose RECORD owns the imported __init__.py; among equals, the newest install.
    found.sort(key=lambda t: (t[0], t[1]), reverse=True)
    owns, _, name, version, info_dir = found[0]
    return name, version, info_dir, [f[2] for f in found]


def kt_kernel_facts():
    """kt-kernel's version and KTMoEWrapper's parameters, read from source; never imported."""
    from importlib import metadata
    import importlib.util

    out = {
        "version": None,
        "dist_info": None,
        "path": None,
        "experts_py": None,
        "wrapper_params": None,
        "wrapper_required_params": None,
        "wants_gpu_experts_mask": None,
        "gpu_experts_mask_required": None,
        "accepts_num_gpu_experts": None,
        "error": None,
    }
    for name in ("kt-kernel", "kt_kernel"):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out["version"] = dist.version
        out["dist_info"] = _dist_info_dir(dist)
        break
    try:
        spec = importlib.util.find_spec("kt_kernel")
    except Exception as exc:  # a broken parent import hook; report, do not fail the facts
        out["error"] = "find_spec('kt_kernel') failed: %s: %s" % (type(exc).__name__, exc)
        return out
    if spec is None:
        return out
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [os.path.dirname(spec.origin)]
    if not locations:
        return out
    out["path"] = locations[0]
    experts = None
    for loc in locations:
        candidate = os.path.join(loc, "experts.py")
        if os.path.isfile(candidate):
            experts = candidate
            break
    if experts is None:
        out["error"] = "kt_kernel has no experts.py; cannot read %s" % KT_WRAPPER_CLASS
        return out
    out["experts_py"] = experts
    tree = parse_source(experts, out)
    if tree is None:
        return out
    params = wrapper_params(tree)
    if params is None:
        out["error"] = "no class %s with __new__/__init__ in %s" % (KT_WRAPPER_CLASS, experts)
        return out
    names = [p[0] for p in params]
    out["wrapper_params"] = names
    out["wrapper_required_params"] = [p[0] for p in params if p[1]]
    out["wants_gpu_experts_mask"] = "gpu_experts_mask" in names
    out["gpu_experts_mask_required"] = any(p[0] == "gpu_experts_mask" and p[1] for p in params)
    out["accepts_num_gpu_experts"] = "num_gpu_experts" in names or any(p[2] for p in params)
    return out


def parse_source(path, out):
    """The module's syntax tree, read without importing it; None with out["error"] set when unreadable."""
    try:
        with open(path, "rb") as fh:
            return ast.parse(fh.read(), filename=path)
    except Exception as exc:
        out["error"] = "cannot parse %s: %s: %s" % (path, type(exc).__name__, exc)
        return None


def wrapper_params(tree):
    """[(name, required, is_var_keyword)] of KTMoEWrapper.__new__ (else __init__), minus cls/self."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == KT_WRAPPER_CLASS:
            methods = {
                item.name: item
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
            fn = methods.get("__new__") or methods.get("__init__")
            if fn is None:
                return None
            a = fn.args
            positional = list(a.posonlyargs) + list(a.args)
            n_required_pos = len(positional) - len(a.defaults)
            params = []
            for i, arg in enumerate(positional):
                params.append((arg.arg, i < n_required_pos, False))
            if a.vararg is not None:
                params.append(("*" + a.vararg.arg, False, False))
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                params.append((arg.arg, default is None, False))
            if a.kwarg is not None:
                params.append(("**" + a.kwarg.arg, False, True))
            return params[1:] if params and params[0][0] in ("cls", "self") else params
    return None


def sglang_wrapper_calls(sglang_dir, kt):
    """How SGLang's kt wrapper calls KTMoEWrapper (read with ``ast`` from
    ``srt/layers/moe/kt_ep_wrapper.py``), and whether every call supplies every parameter the
    installed kt-kernel requires. Upstream sglang 0.5.23 passes ``num_gpu_experts=`` and no
    ``gpu_experts_mask``, which kt-kernel 0.7.x requires: the server dies at model construction."""
    out = {"file": None, "calls": [], "missing_required": None, "compatible": None, "error": None}
    path = os.path.join(sglang_dir, "srt", "layers", "moe", "kt_ep_wrapper.py")
    if not os.path.isfile(path):
        out["error"] = "no srt/layers/moe/kt_ep_wrapper.py in %s" % sglang_dir
        return out
    out["file"] = path
    tree = parse_source(path, out)
    if tree is None:
        return out
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name != KT_WRAPPER_CLASS:
            continue
        out["calls"].append({
            "line": node.lineno,
            "n_positional": len(node.args),
            "keywords": [k.arg for k in node.keywords if k.arg is not None],
            "has_star_kwargs": any(k.arg is None for k in node.keywords),
        })
    required = (kt or {}).get("wrapper_required_params")
    params = (kt or {}).get("wrapper_params")
    if out["calls"] and required is not None and params is not None:
        missing = set()
        unknown = set()
        takes_var_kw = any(p.startswith("**") for p in params)
        checked = 0
        for call in out["calls"]:
            if call["has_star_kwargs"]:
                continue  # cannot tell statically
            checked += 1
            supplied = set(params[: call["n_positional"]]) | set(call["keywords"])
            missing |= {p for p in required if p not in supplied}
            if not takes_var_kw:
                unknown |= {k for k in call["keywords"] if k not in params}
        out["missing_required"] = sorted(missing)
        out["unknown_keywords"] = sorted(unknown)
        # None: every call passes **kwargs, so the source alone cannot tell.
        out["compatible"] = (not missing and not unknown) if checked else None
    return out


# -- the parser ------------------------------------------------------------------------------


class ParseRejected(Exception):
    pass


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (parse mode only)."""

    def error(self, message):
        raise ParseRejected(message)

    def exit(self, status=0, message=None):
        raise ParseRejected(message.strip() if message else "parser exited with status %s" % status)


def import_server_args():
    with _StdoutToStderr():
        from sglang.srt.server_args import ServerArgs  # noqa: WPS433 (the point of this script)
    return ServerArgs


def build_parser(server_args_cls, cls=argparse.ArgumentParser):
    parser = cls()
    with _StdoutToStderr():
        server_args_cls.add_cli_args(parser)
    return parser


def describe_action(action):
    name = type(action).__name__
    return {
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "type": type_name(action.type),
        "default": json_safe(action.default),
        "choices": choices_of(action.choices),
        "nargs": json_safe(action.nargs),
        "const": json_safe(action.const),
        "action": name,
        "required": bool(action.required),
        "help": help_of(action.help),
        "metavar": json_safe(action.metavar),
        "deprecated": bool(getattr(action, "deprecated", False)) or "deprecat" in name.lower(),
    }


CONFIG_MERGER_MODULES = ("sglang.srt.utils.server_args_config_parser", "sglang.srt.server_args_config_parser")


def config_merger_facts(parser):
    """How SGLang's own ``--config FILE`` turns YAML keys into flags, asked of its ConfigArgumentMerger built on
    this parser: the keys it treats as switches and the keys it refuses (unsupported argparse actions). None when
    this SGLang has no merger; ``{"error": ...}`` when it could not be built."""
    import importlib

    for name in CONFIG_MERGER_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if getattr(exc, "name", None) in (name, name.rsplit(".", 1)[0]):
                continue  # not this SGLang's layout
            return {"module": name, "error": "%s: %s" % (type(exc).__name__, exc)}  # a dependency is missing
        except BaseException as exc:  # noqa: BLE001
            return {"module": name, "error": "%s: %s" % (type(exc).__name__, exc)}
        try:
            with _StdoutToStderr():
                merger = module.ConfigArgumentMerger(parser)
            return {
                "module": name,
                "store_true_keys": sorted(str(k) for k in merger.store_true_actions),
                "unsupported_keys": {str(k): type(a).__name__ for k, a in merger.unsupported_actions.items()},
            }
        except BaseException as exc:  # noqa: BLE001
            return {"module": name, "error": "%s: %s" % (type(exc).__name__, exc)}
    return None


def launch_allow_abbrev():
    """Whether the parser of ``sglang.launch_server`` (``prepare_server_args``) takes abbreviated flags: the
    ``allow_abbrev=`` of its ``argparse.ArgumentParser(...)`` call (argparse's default, True, when not given);
    None when that function cannot be read."""
    import inspect
    import textwrap

    try:
        from sglang.srt import server_args as module

        tree = ast.parse(textwrap.dedent(inspect.getsource(module.prepare_server_args)))
    except BaseException:  # noqa: BLE001
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name == "ArgumentParser":
                for kw in node.keywords:
                    if kw.arg == "allow_abbrev":
                        return kw.value.value if isinstance(kw.value, ast.Constant) else None
                return True
    return None


def site_dirs():
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except Exception:
        pass
    try:
        if site.ENABLE_USER_SITE is not False:
            dirs.append(site.getusersitepackages())
    except Exception:
        pass
    return dirs


def facts_mode():
    t0 = time.monotonic()
    import importlib.util

    result = {
        "ok": False,
        "schema": SCHEMA,
        "mode": "facts",
        "python": sys.executable,
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "prefix": sys.prefix,
        "sys_path": list(sys.path),
        "site_dirs": site_dirs(),
        "gpus_hidden": GPUS_HIDDEN,
    }
    try:
        spec = importlib.util.find_spec("sglang")
    except Exception as exc:
        spec = None
        result.update(error_kind="import_failed", error="find_spec('sglang') failed: %s: %s" % (type(exc).__name__, exc))
        emit(result)
        return
    if spec is None or not spec.origin:
        result.update(
            error_kind="not_installed",
            error="no module named 'sglang' in %s (install sglang-kt or sglang into this interpreter)" % sys.executable,
            kt_kernel=kt_kernel_facts(),
        )
        emit(result)
        return
    sglang_init = spec.origin
    result["sglang_init"] = sglang_init
    result["sglang_path"] = os.path.dirname(sglang_init)
    name, version, info_dir, providers = sglang_distribution(sglang_init)
    result.update(distribution=name, version=version, dist_info=info_dir, providers=providers)
    warnings = []
    if len(providers) > 1:
        warnings.append(
            "several distributions install the 'sglang' package here (%s); the files on disk are "
            "whichever was installed last, taken to be %s" % (", ".join(providers), name)
        )
    result["kt_kernel"] = kt_kernel_facts()
    result["kt_wrapper_calls"] = sglang_wrapper_calls(result["sglang_path"], result["kt_kernel"])
    t_import = time.monotonic()
    try:
        server_args_cls = import_server_args()
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a dependency counts too
        result.update(
            error_kind="import_failed",
            error="import sglang.srt.server_args failed: %s: %s" % (type(exc).__name__, exc),
            traceback=traceback.format_exc()[-4000:],
            warnings=warnings,
        )
        emit(result)
        return
    result["import_seconds"] = round(time.monotonic() - t_import, 3)
    try:
        parser = build_parser(server_args_cls)
    except BaseException as exc:  # noqa: BLE001
        result.update(
            error_kind="parser_failed",
            error="ServerArgs.add_cli_args failed: %s: %s" % (type(exc).__name__, exc),
            traceback=traceback.format_exc()[-4000:],
            warnings=warnings,
        )
        emit(result)
        return
    result["options"] = [describe_action(a) for a in parser._actions]
    result["config_merger"] = config_merger_facts(parser)
    result["allow_abbrev"] = launch_allow_abbrev()
    result["warnings"] = warnings
    result["ok"] = True
    result["seconds"] = round(time.monotonic() - t0, 3)
    emit(result)


def parse_mode():
    try:
        request = json.loads(sys.stdin.read() or "null")
    except ValueError as exc:
        emit({"ok": False, "mode": "parse", "error_kind": "bad_request", "error": "stdin is not JSON: %s" % exc})
        return
    if isinstance(request, dict):
        request = request.get("argvs")
    if not isinstance(request, list) or not all(
        isinstance(argv, list) and all(isinstance(x, str) for x in argv) for argv in request
    ):
        emit({"ok": False, "mode": "parse", "error_kind": "bad_request", "error": "stdin must be a JSON list of argv lists of strings"})
        return
    try:
        server_args_cls = import_server_args()
    except BaseException as exc:  # noqa: BLE001
        emit({
            "ok": False,
            "mode": "parse",
            "error_kind": "import_failed",
            "error": "import sglang.srt.server_args failed: %s: %s" % (type(exc).__name__, exc),
            "traceback": traceback.format_exc()[-4000:],
        })
        return
    results = []
    for argv in request:
        try:
            parser = build_parser(server_args_cls, _RaisingParser)
            with _StdoutToStderr():
                namespace = parser.parse_args(argv)
        except ParseRejected as exc:
            results.append({"ok": False, "error": str(exc)})
            continue
        except BaseException as exc:  # noqa: BLE001 - a type= callable may raise anything
            results.append({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)})
            continue
        results.append({"ok": True, "namespace": json_safe(vars(namespace))})
    emit({"ok": True, "mode": "parse", "schema": SCHEMA, "results": results})


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    mode = argv[0] if argv else "facts"
    if mode == "facts":
        facts_mode()
    elif mode == "parse":
        parse_mode()
    else:
        emit({"ok": False, "error_kind": "bad_request", "error": "unknown mode %r (facts|parse)" % mode})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
