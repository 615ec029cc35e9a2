"""The install gate's worker: runs in the target interpreter (runtime.python), never imported by the launcher.

What the server needs before it reads a weight, asked of the install itself:

* the installed distributions that decide whether the server starts (the SGLang distribution, kt-kernel, torch,
  transformers(-kt), flashinfer, sgl_kernel's distribution) and every requirement they declare
  (``importlib.metadata`` for Requires-Dist, ``packaging`` -- or pip's own copy of it -- to read and match them),
  reported when unmet: who requires it, the spec, the installed version;
* the modules the server imports at start (``python -m sglang.launch_server`` -> its HTTP entry point ->
  ``sgl_kernel``; ``kt_kernel`` with the CPU variant this machine loads), each imported for real in a child
  process with a deadline, so a crash or hang of one (a SIGILL in a kernel variant) costs only that answer;
* when sgl_kernel is present: the modules that carry its CUDA payload (``sgl_kernel/_payload_manifest.py``, read
  as text, never imported) and which of them are missing.

Usage: ``python install_worker.py gate`` prints one JSON object on stdout (the last line); library noise goes to
stderr. ``python install_worker.py import MOD...`` is the child: one JSON line per module on the descriptor it was
handed as stdout, everything the imports print goes to stderr.

The imports have the side effects a server start has (sglang.launch_server sweeps stale torch-extension locks;
sgl_kernel unpacks its CUDA payload into its cache once); they read no model and open no port.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder (kt_launch/facts) is sys.path[0]: it holds modules named like the
# standard library's and the packages under test (profile.py, sglang.py). Drop it before importing anything.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import ast  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import site  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

SCHEMA = 1
# The distributions that decide whether the server starts (normalized names). Their own requirements are read.
KEY = ("sglang-kt", "sglang", "kt-kernel", "torch", "transformers-kt", "transformers", "flashinfer-python",
       "sgl-kernel", "sglang-kernel")
# What `python -m sglang.launch_server` imports before any weight: the module itself, then the HTTP entry point
# its run_server() imports in the default mode (sglang/launch_server.py), then the kernels every model uses.
SERVER_CHAIN = ("sglang.launch_server", "sglang.srt.entrypoints.http_server", "sgl_kernel")
KT_CHAIN = ("kt_kernel",)
IMPORT_DEADLINE_S = float(os.environ.get("KT_LAUNCH_GATE_IMPORT_TIMEOUT", "240"))


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    """(Requirement, InvalidRequirement, InvalidVersion, Version, where), or None when neither packaging nor
    pip's vendored copy is importable."""
    for where in ("packaging", "pip._vendor.packaging"):
        try:
            req = __import__(f"{where}.requirements", fromlist=["Requirement", "InvalidRequirement"])
            ver = __import__(f"{where}.version", fromlist=["Version", "InvalidVersion"])
            return req.Requirement, req.InvalidRequirement, ver.InvalidVersion, ver.Version, where
        except Exception:  # noqa: BLE001  (any failure: try the next)
            continue
    return None


def _installed():
    """normalized name -> (display name, version) of every distribution this interpreter sees (first wins,
    as the import system's order)."""
    import importlib.metadata as md

    out = {}
    for d in md.distributions():
        try:
            name = d.metadata["Name"]
            version = d.version
        except Exception:  # noqa: BLE001  (a broken dist-info must not stop the gate)
            continue
        if name and _norm(name) not in out:
            out[_norm(name)] = (name, version)
    return out


def _requires(name):
    import importlib.metadata as md

    try:
        return md.requires(name) or []
    except Exception:  # noqa: BLE001
        return []


def requirements(installed, pk):
    """Unmet requirements of the key distributions that are installed."""
    Requirement, InvalidRequirement, InvalidVersion, Version, _ = pk
    unmet = []
    for key in KEY:
        if key not in installed:
            continue
        by, by_version = installed[key]
        for line in _requires(by):
            try:
                r = Requirement(line)
            except InvalidRequirement:
                continue
            try:
                if r.marker is not None and not r.marker.evaluate({"extra": ""}):
                    continue
            except Exception:  # noqa: BLE001  (a marker this packaging cannot evaluate: not judged)
                continue
            have = installed.get(_norm(r.name))
            met = False
            if have is not None:
                try:
                    met = not str(r.specifier) or r.specifier.contains(Version(have[1]), prereleases=True)
                except InvalidVersion:
                    met = False
            if not met:
                unmet.append({"by": by, "by_version": by_version, "name": r.name, "spec": str(r.specifier),
                              "installed": have[1] if have else None})
    return unmet


def payload():
    """sgl_kernel's CUDA payload carriers: the modules its manifest lists and which are missing (None: no
    sgl_kernel, or no manifest: the binaries are in the wheel itself)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sgl_kernel")
    except Exception:  # noqa: BLE001
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    manifest = os.path.join(folder, "_payload_manifest.py")
    try:
        with open(manifest, encoding="utf-8") as f:
            tree = ast.parse(f.read(1 << 20))
    except (OSError, SyntaxError, ValueError):
        return None
    modules = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PAYLOAD_MODULES"
                                                for t in node.targets):
            try:
                modules = [m for m in ast.literal_eval(node.value) if isinstance(m, str)]
            except ValueError:
                modules = []
    missing = []
    for m in modules:
        try:
            found = importlib.util.find_spec(m) is not None
        except Exception:  # noqa: BLE001
            found = False
        if not found:
            missing.append(m)
    return {"manifest": manifest, "modules": modules, "missing": missing}


def _found(module):
    import importlib.util

    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except Exception:  # noqa: BLE001
        return False


def _signal_name(rc):
    if rc is None or rc >= 0:
        return None
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def start_imports(modules):
    """A child that imports `modules` in order (a failure does not stop the next); its results come on a pipe."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "import", str(write_fd), *modules],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    return proc, read_fd


def finish_imports(modules, proc, read_fd, deadline):
    """The results of a child started by start_imports; a module it never finished is a timeout or a crash."""
    chunks = []
    err = b""
    timed_out = False
    try:
        _, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        _, err = proc.communicate()
    os.set_blocking(read_fd, False)
    while True:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    results = {}
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("module") in modules:
            results[r["module"]] = r
    out = []
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
    for m in modules:
        if m in results and "ok" in results[m]:
            out.append(results[m])
        elif m in results:  # begun, never finished: this module hung or killed the process
            sig = _signal_name(proc.returncode)
            how = (f"did not finish importing within {IMPORT_DEADLINE_S:g} s" if timed_out else
                   f"the process died with {sig}" if sig else f"the process exited with status {proc.returncode}")
            out.append({"module": m, "ok": False, "error": "Crash" if not timed_out else "Timeout",
                        "last_line": how + (f"; its stderr ends with: {tail[0][:300]}" if tail and not timed_out
                                            else ""), "where": None, "timed_out": timed_out})
        # never begun: an earlier module's crash ended the child; that one is reported
    return out


def import_child(argv):
    """`import FD MOD...`: results as JSON lines on FD; fd 1 goes to stderr so that library prints stay out."""
    fd = int(argv[0])
    out = os.fdopen(fd, "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    for m in argv[1:]:
        out.write(json.dumps({"module": m, "begin": True}) + "\n")
        t0 = time.monotonic()
        try:
            __import__(m)
            r = {"module": m, "ok": True}
        except BaseException as e:  # noqa: BLE001  (SystemExit, KeyboardInterrupt from a module: an answer too)
            text = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()
            lines = [ln.strip() for ln in text if ln.strip()]
            frames = traceback.extract_tb(e.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None
            r = {"module": m, "ok": False, "error": type(e).__name__, "last_line": (lines[-1] if lines else
                 type(e).__name__)[:500], "where": where}
        r["seconds"] = round(time.monotonic() - t0, 3)
        out.write(json.dumps(r) + "\n")
    out.flush()
    return 0


def site_dirs():
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except Exception:  # noqa: BLE001
        pass
    try:
        if site.ENABLE_USER_SITE is not False:
            dirs.append(site.getusersitepackages())
    except Exception:  # noqa: BLE001
        pass
    return dirs


def gate():
    t0 = time.monotonic()
    installed = _installed()
    pk = _packaging()
    chains = []
    if _found("sglang"):
        chains.append(SERVER_CHAIN)
    if _found("kt_kernel"):
        chains.append(KT_CHAIN)
    deadline = time.monotonic() + IMPORT_DEADLINE_S
    running = [(c, *start_imports(list(c))) for c in chains]  # in parallel: each pays its own torch import
    imports = []
    for c, proc, fd in running:
        imports += finish_imports(list(c), proc, fd, deadline)
    return {
        "ok": True, "schema": SCHEMA, "python": sys.executable,
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "requirements_reader": pk[4] if pk else None,
        "dists": {installed[k][0]: installed[k][1] for k in KEY if k in installed},
        "unmet": requirements(installed, pk) if pk else [],
        "imports": imports,
        "payload": payload(),
        "sys_path": list(sys.path), "site_dirs": site_dirs(),
        "seconds": round(time.monotonic() - t0, 3),
    }


def _die_with_parent():
    """The launcher starts this worker in a session of its own (so a timeout kills the whole group); if the
    launcher itself is killed, the worker and its import children must not outlive it (Linux: PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001  (not Linux: the deadlines still end it)
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    if argv and argv[0] == "import":
        return import_child(argv[1:])
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # anything a library prints while the gate runs goes to stderr
    try:
        answer = gate()
    except Exception as e:  # noqa: BLE001  (a bug here is an answer with the reason, not a silent crash)
        answer = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    os.write(real_stdout, (json.dumps(answer) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
