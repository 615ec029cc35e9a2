"""Hostile and broken input, as a careless or malicious user gives it: a table of cases, each run through the real
CLI with a 10 s limit (a hang fails): in-process (`cli.main`) where the input is the subject, as the real
`kt-launch` in a subprocess where the process is (its stdout descriptor, a file-size limit, the interpreter's
stdio encoding, a snippet run by the interpreter). Every case asserts: no traceback; the exit code
(2 invalid input, 3 plan errors, 1 output failure, 0 where fine); the file or field named in the message; no
secret in stdout, stderr or the JSON plan; no partial or temporary file left, and protected files unchanged.

Classes (issue 10): special files and the bounded reader (FIFO, /dev/zero, directories, deep nesting,
duplicate keys, 1e400/NaN) for every file kt-launch reads; caches (a warning and a rebuild, never a crash
or a wrong value); host facts as a whole; secrets; values that look like flags; atomic writes; output errors.
Supervise cases live in test_supervise.py (real processes and signals).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from devtools import synthetic
from kt_launch.cli import main
from kt_launch.core.options import OPTIONS
from kt_launch.facts.host import GPU_QUERY
from operate.support import HOST, REPO, Hang, no_hang

LIMIT_S = 10
SECRET = "sk-HOSTILE-" + "Zq9" * 40  # long enough to be cut short by someone's [:80]
BIG_SECRET = "sk-" + "W7x" * 3400  # a 10 kB api key


@dataclass
class Run:
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stdout: str = "pipe"  # pipe | full | closed | epipe
    protect: list[Path] = field(default_factory=list)  # files whose bytes must not change
    fsize: int | None = None  # RLIMIT_FSIZE: a real "disk full" for files this process writes
    python: str | None = None  # run this snippet with the interpreter instead of kt-launch


@dataclass
class Case:
    build: Callable[[Path], Run]
    rc: tuple[int, ...]
    words: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()  # other text that must not appear


# -- builders ------------------------------------------------------------------------------------

def _host(tmp: Path, doc: dict | None = None) -> Path:
    p = tmp / "host.json"
    p.write_text(json.dumps(HOST if doc is None else doc))
    return p


def _profile(tmp: Path, doc: dict | None = None, name: str = "p.yaml", text: str | None = None) -> Path:
    p = tmp / name
    p.write_text(text if text is not None else yaml.safe_dump(doc or {
        "model": {"path": "/nonexistent/model"}, "kt": {"weight_path": "/nonexistent/w", "method": "AMXINT8"},
        "server": {"port": 30000}, "runtime": {"python": "/usr/bin/python3", "flavor": "sglang-kt"}}))
    return p


def _dry(tmp: Path, *extra: str, profile: Path | None = None, host: Path | None = None) -> list[str]:
    return ["--profile", str(profile or _profile(tmp)), "--host-facts", str(host or _host(tmp)), "--no-check",
            "--dry-run", *extra]


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def _deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def _special(kind: str, where: Path) -> Path:
    """A special or hostile stand-in for a JSON file at `where` (or the path to use instead)."""
    if kind == "fifo":
        return _fifo(where)
    if kind == "dir":
        where.mkdir()
        return where
    if kind == "zero":
        return Path("/dev/zero")
    text = {"deep": _deep(), "dup": '{"a": 1, "a": 2}', "inf": '{"a": 1e400}', "nan": '{"a": NaN}',
            "huge": '{"a": "' + "x" * (5 << 20) + '"}'}[kind]
    where.write_text(text)
    return where


def _demo(tmp: Path) -> tuple[Path, dict]:
    root = tmp / "t"
    synthetic.demo(root)
    return root, synthetic.amx_profile(root)


def _check(tmp: Path, doc: dict, *extra: str) -> list[str]:
    return ["check", "--profile", str(_profile(tmp, doc)), "--host-facts", str(_host(tmp)), *extra]


# -- the corpus -----------------------------------------------------------------------------------

CASES: dict[str, Case] = {}


def case(name: str, rc: tuple[int, ...], words: tuple[str, ...] = (), secrets: tuple[str, ...] = (),
         absent: tuple[str, ...] = ()):
    def register(build):
        CASES[name] = Case(build, rc, words, secrets, absent)
        return build
    return register


# 1. The bounded reader, for every file kt-launch reads -------------------------------------------

for kind, words in {"fifo": ("not a regular file",), "dir": ("is a directory",), "zero": ("not a regular file",),
                    "deep": ("nested deeper",), "dup": ("appears twice",), "inf": ("out of range",),
                    "nan": ("NaN",), "huge": ("more than",)}.items():
    @case(f"host-facts:{kind}", (2,), ("--host-facts", *words))
    def _(tmp, kind=kind):
        return Run(_dry(tmp, host=_special(kind, tmp / "h.json")))

    @case(f"doctor-host-facts:{kind}", (2,), ("--host-facts", *words))
    def _(tmp, kind=kind):
        return Run(["doctor", "--host-facts", str(_special(kind, tmp / "h.json"))])

    @case(f"config.json:{kind}", (3,), ("KT-E108", "config.json", *words))
    def _(tmp, kind=kind):
        root, doc = _demo(tmp)
        cfg = root / "model" / "config.json"
        cfg.unlink()
        got = _special(kind, cfg)
        if got != cfg:
            os.symlink(got, cfg)
        return Run(_check(tmp, doc))

    if kind in ("fifo", "deep", "dup", "inf", "dir"):
        @case(f"adapter_config.json:{kind}", (3,), ("KT-E217", "adapter_config.json", *words))
        def _(tmp, kind=kind):
            root = tmp / "t"
            synthetic.demo(root)
            cfg = root / "lora" / "adapter_config.json"
            cfg.unlink()
            _special(kind, cfg)
            return Run(_check(tmp, synthetic.moe_lora_profile(root)))

        @case(f"index.json:{kind}", (3,), ("KT-E224", "model.safetensors.index.json", *words))
        def _(tmp, kind=kind):
            root, doc = _demo(tmp)
            idx = root / "model" / "model.safetensors.index.json"
            idx.unlink()
            _special(kind, idx)
            return Run(_check(tmp, doc))


for key, value in {"first_k_dense_replace": "1", "moe_layer_freq": 2.5, "hidden_size": True,
                   "num_hidden_layers": 10 ** 40}.items():
    @case(f"config.json:{key} of the wrong type", (3,), ("KT-E108", "config.json", key))
    def _(tmp, key=key, value=value):
        root, doc = _demo(tmp)
        cfg = root / "model" / "config.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), key: value}))
        return Run(_check(tmp, doc))


# Impossible shapes: each key is fine alone, the whole is not (issue 18)
for label, change, words in [
    ("top-k above the experts", {"num_experts_per_tok": 64, "n_routed_experts": 4}, ("num_experts_per_tok=64",)),
    ("every layer dense", {"first_k_dense_replace": 4, "num_hidden_layers": 4}, ("first_k_dense_replace=4",)),
    ("MLA without kv_lora_rank", {"kv_lora_rank": None}, ("MLA", "kv_lora_rank")),
    ("MLA without qk_rope_head_dim", {"qk_rope_head_dim": None}, ("MLA", "qk_rope_head_dim")),
]:
    @case(f"config.json:{label}", (3,), ("KT-E108", "config.json", *words), absent=("0 MoE layers",))
    def _(tmp, change=change):
        root, doc = _demo(tmp)
        cfg = root / "model" / "config.json"
        data = {**json.loads(cfg.read_text()), **change}
        cfg.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
        return Run(_check(tmp, doc))


@case("profile:directory", (2,), ("is a directory",))
def _(tmp):
    (tmp / "d").mkdir()
    return Run(_dry(tmp, profile=tmp / "d"))


@case("profile:/dev/zero", (2,), ("/dev/zero", "not a regular file"))
def _(tmp):
    return Run(_dry(tmp, profile=Path("/dev/zero")))


@case("profile:fifo", (2,), ("not a regular file",))
def _(tmp):
    return Run(_dry(tmp, profile=_fifo(tmp / "p.fifo")))


@case("extends:fifo", (2,), ("parent.yaml", "not a regular file"))
def _(tmp):
    _fifo(tmp / "parent.yaml")
    return Run(_dry(tmp, profile=_profile(tmp, text="extends: parent.yaml\nmodel: {path: /m}\n")))


@case("extends:directory", (2,), ("parent", "is a directory"))
def _(tmp):
    (tmp / "parent").mkdir()
    return Run(_dry(tmp, profile=_profile(tmp, text="extends: parent\nmodel: {path: /m}\n")))


@case("profile:duplicate key", (2,), ("appears twice",))
def _(tmp):
    return Run(_dry(tmp, profile=_profile(tmp, text="model: {path: /m}\nkt: {cpuinfer: 4}\nkt: {cpuinfer: 8}\n")))


# A 400-digit count for every numeric key: refused naming the key (exit 2), never an OverflowError in the fit.
HUGE = "9" * 400
for o in OPTIONS:
    if o.settable and o.type in (int, float, list[int]) or o.key == "fleet.replicas":
        value = f"[{HUGE}]" if o.type == list[int] else HUGE

        @case(f"profile:400-digit {o.key}", (2,), (o.key,) if o.type is float else (o.key, "less than or equal"))
        def _(tmp, key=o.key, value=value):
            root, doc = _demo(tmp)
            if key.startswith("moe_lora."):
                doc = synthetic.moe_lora_profile(root)
            return Run(["--profile", str(_profile(tmp, doc)), "--host-facts", str(_host(tmp)), "--dry-run",
                        "--set", f"{key}={value}"])


@case("profile:400-digit fleet.hosts[].replicas", (2,), ("fleet.hosts", "replicas", "out of range"))
def _(tmp):
    _write(tmp / "b.json", HOST)
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["fleet"] = {"hosts": [{"name": "b", "address": "10.0.0.12", "host_facts": "b.json", "replicas": int(HUGE)}]}
    return Run(_dry(tmp, profile=_profile(tmp, doc)))


# Not a profile: named with its first problem only, none of its lines echoed (issue 18: /etc/shadow)
SHADOW = "".join(f"{u}:$6$Zq9salt$HashOf{u}Zq9Zq9Zq9Zq9Zq9:20228:0:99999:7:::\n" for u in ("root", "daemon", "alice"))
for label, text, words in [
    ("a shadow file", SHADOW, ("not a kt-launch profile", "3 top-level key(s)")),
    ("a passwd file", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n",
     ("must be a mapping",)),
    ("a key: value file", "db_password: hunter2-Zq9\napi: sk-Zq9Zq9Zq9Zq9\n", ("not a kt-launch profile",)),
]:
    @case(f"profile:{label}", (2,), words, absent=("Zq9", "hunter2", "daemon", "alice", "bash"))
    def _(tmp, text=text):
        return Run(_dry(tmp, profile=_profile(tmp, name="other", text=text)))


@case("profile:a typo in the only section", (2,), ("not a kt-launch profile", "did you mean 'model'"))
def _(tmp):
    return Run(_dry(tmp, profile=_profile(tmp, text="modle: {path: /m}\n")))


@case("profile:control characters in a key are escaped", (2,), ("unknown key", "\\x1b[31m", "\\r\\n"),
      absent=("\x1b", "\r"))
def _(tmp):
    return Run(_dry(tmp, profile=_profile(tmp, text='model: {path: /m}\n"\\e[31mred\\r\\nkt-launch: ok": 2\n')))


@case("profile:control characters in a --set key are escaped", (2,), ("\\x1b[31m",), absent=("\x1b",))
def _(tmp):
    return Run(_dry(tmp, "--set", "\x1b[31mkt.cpuinfer=5"))


@case("profile:control characters in an env name are escaped", (0,), ("\\x1b[31m",), absent=("\x1b",))
def _(tmp):
    return Run(_dry(tmp), env={"KT_LAUNCH_\x1b[31mKT__X": "1"})


# 2. Caches: a warning and a rebuild, never a crash, a hang or a wrong value -----------------------

for kind in ("fifo", "dir", "deep", "dup", "inf", "nan"):
    @case(f"tuning.json:{kind}", (0, 3), ("tuning.json", "ignored"), absent=("source tuned", "tuned:"))
    def _(tmp, kind=kind):
        root, doc = _demo(tmp)
        cache = tmp / "cache"
        cache.mkdir()
        _special(kind, cache / "tuning.json")
        return Run(_check(tmp, doc), env={"KT_LAUNCH_CACHE_DIR": str(cache)})

    if kind != "dir":
        @case(f"sglang-cache:{kind}", (0,), ("cache file", "ignored", "interpreter gone"))
        def _(tmp, kind=kind):
            fake = tmp / "py"
            fake.write_text("#!/bin/sh\nexit 1\n")
            fake.chmod(0o755)
            cache = tmp / "sg"
            cache.mkdir()
            code = (
                "import os, sys\n"
                "from pathlib import Path\n"
                "from kt_launch.facts import sglang\n"
                f"root, py = Path({str(cache)!r}), {str(fake)!r}\n"
                "entry = sglang._entry_path(root, sglang._resolve_python(py), os.environ)\n"
                f"kind = {kind!r}\n"
                "if kind == 'fifo': os.mkfifo(entry)\n"
                "else: entry.write_text({'deep': '[' * 100000, 'dup': '{\"a\":1,\"a\":1}', 'inf': '{\"a\":1e400}',"
                " 'nan': '{\"a\":NaN}'}[kind])\n"
                "f = sglang.read_sglang_facts(py, cache_dir=root)\n"
                "print('interpreter gone' if not f.ok else 'ok?')\n")
            return Run([], python=code)

        @case(f"install-cache:{kind}", (0,), ("cache file", "ignored", "install not judged"))
        def _(tmp, kind=kind):
            fake = tmp / "py"
            fake.write_text("#!/bin/sh\nexit 1\n")
            fake.chmod(0o755)
            cache = tmp / "ig"
            cache.mkdir()
            code = (
                "import os\n"
                "from pathlib import Path\n"
                "from kt_launch.facts import install\n"
                f"root, py = Path({str(cache)!r}), {str(fake)!r}\n"
                "entry = install._entry_path(root, install._resolve_python(py), os.environ)\n"
                f"kind = {kind!r}\n"
                "if kind == 'fifo': os.mkfifo(entry)\n"
                "else: entry.write_text({'deep': '[' * 100000, 'dup': '{\"a\":1,\"a\":1}', 'inf': '{\"a\":1e400}',"
                " 'nan': '{\"a\":NaN}'}[kind])\n"
                "f = install.read_install_facts(py, cache_dir=root)\n"
                "print('install not judged' if not f.judged and f.failed else 'judged?')\n")
            return Run([], python=code)


LONG_PATH = "/" + "/".join(["x" * 250] * 20)  # 5 kB, components of 250 bytes: ENAMETOOLONG for open()
for name, env in {"HOME": {"HOME": LONG_PATH, "KT_LAUNCH_CACHE_DIR": "", "XDG_CACHE_HOME": ""},
                  "KT_LAUNCH_CACHE_DIR": {"KT_LAUNCH_CACHE_DIR": "/tmp/" + "y" * 300},
                  "relative HOME": {"HOME": "rel/home", "KT_LAUNCH_CACHE_DIR": "", "XDG_CACHE_HOME": ""}}.items():
    @case(f"cache:{name} unusable", (0, 3), ("no cache", name.split()[-1]))
    def _(tmp, env=env):
        root, doc = _demo(tmp)
        return Run(["--profile", str(_profile(tmp, doc)), "--host-facts", str(_host(tmp)), "--dry-run"], env=env)


@case("tuning.json:wrong types", (0, 3), ("tuning cache", "cpuinfer"), absent=("--kt-cpuinfer --kt",))
def _(tmp):
    root, doc = _demo(tmp)
    cache = tmp / "cache"
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from kt_launch.facts.host import load_host_facts\n"
        "from kt_launch.facts.model import read_model_facts\n"
        "from kt_launch.facts.tuning import cache_key, host_fingerprint\n"
        f"h = load_host_facts({str(_host(tmp))!r}); m = read_model_facts({str(root / 'model')!r})\n"
        "key = cache_key(host_fingerprint(h), m.shape_key, 'AMXINT8')\n"
        f"Path({str(cache)!r}).mkdir()\n"
        f"Path({str(cache / 'tuning.json')!r}).write_text(json.dumps({{'version': 1, 'entries': {{key: "
        "{'cpuinfer': True, 'threadpool_count': 1}}}))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=LIMIT_S)
    return Run(_check(tmp, doc, "--json"), env={"KT_LAUNCH_CACHE_DIR": str(cache)})


def _smi(tmp: Path, line: str = "0, NVIDIA H200, 143771, GPU-1") -> Path:
    bin_ = tmp / "bin"
    bin_.mkdir(exist_ok=True)
    smi = bin_ / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{line}'\n")
    smi.chmod(0o755)
    return bin_


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


for kind in ("fifo", "deep", "inf-in-text", "wrong-type"):
    @case(f"gpus.json:{kind}", (0,), ("gpus.json", "ignored", "[143771]"))
    def _(tmp, kind=kind):
        if _boot_id() is None:
            pytest.skip("no boot id: the GPU cache is not used here")
        bin_ = _smi(tmp)
        cache = tmp / "cache"
        cache.mkdir()
        entry = cache / "gpus.json"
        if kind == "fifo":
            _fifo(entry)
        elif kind == "deep":
            entry.write_text(_deep())
        else:
            out = "0, NVIDIA H200, 1e400, GPU-1\n" if kind == "inf-in-text" else 7
            entry.write_text(json.dumps({"boot_id": _boot_id(), "smi": str(bin_ / "nvidia-smi"), "query": GPU_QUERY,
                                         "out": out}))
        code = ("import os\nfrom kt_launch.facts.host import gather_host\n"
                "h = gather_host()\nprint([g.memory_bytes >> 20 for g in h.gpus])\n")
        return Run([], env={"KT_LAUNCH_CACHE_DIR": str(cache), "PATH": f"{bin_}:{os.environ['PATH']}"}, python=code)


@case("gpus.json:cannot be written", (0,), ("[143771]",))
def _(tmp):
    if _boot_id() is None:
        pytest.skip("no boot id: the GPU cache is not used here")
    bin_ = _smi(tmp)
    cache = tmp / "cache"
    (cache / "gpus.json").mkdir(parents=True)  # a directory where the entry goes: the rename fails
    code = ("from kt_launch.facts.host import gather_host\n"
            "h = gather_host()\nprint([g.memory_bytes >> 20 for g in h.gpus])\n")
    return Run([], env={"KT_LAUNCH_CACHE_DIR": str(cache), "PATH": f"{bin_}:{os.environ['PATH']}"}, python=code)


# 3. Host facts as a whole -------------------------------------------------------------------------

def _host_with(**changes) -> dict:
    doc = json.loads(json.dumps(HOST))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
    return doc


HOSTS = {
    "numa empty": (_host_with(numa=[]), "numa is empty"),
    "node cpus outside usable": (_host_with(numa=[{"id": 0, "cpus": list(range(100, 116))}]), "in no NUMA node"),
    "duplicate node id": (_host_with(numa=[{"id": 0, "cpus": list(range(8))}, {"id": 0, "cpus": list(range(8, 16))}]),
                          "node id 0 appears twice"),
    "cpu in two nodes": (_host_with(numa=[{"id": 0, "cpus": list(range(9))}, {"id": 1, "cpus": list(range(8, 16))}]),
                         "CPU 8"),
    "no node has cpus": (_host_with(numa=[{"id": 0, "cpus": []}]), "numa"),
    "duplicate gpu index": (_host_with(gpus=[{"index": 0, "memory_bytes": 1}, {"index": 0, "memory_bytes": 1}]),
                            "gpus: index 0 appears twice"),
    "gpu on an unknown numa node": (_host_with(gpus__0__numa_node=5), "gpus[0].numa_node"),
    "gpu memory negative": (_host_with(gpus__0__memory_bytes=-1), "gpus[0].memory_bytes"),
    "gpu memory float": (_host_with(gpus__0__memory_bytes=1.5e10), "gpus[0].memory_bytes"),
    "gpu memory huge": (_host_with(gpus__0__memory_bytes=10 ** 30), "gpus[0].memory_bytes"),
    "gpu memory zero": (_host_with(gpus__0__memory_bytes=0), "gpus[0].memory_bytes"),
    "gpu memory absent": ({**HOST, "gpus": [{"index": 0, "name": "Test GPU"}]}, "gpus[0].memory_bytes"),
    "bool for a count": (_host_with(cpu__physical_cores=True), "cpu.physical_cores"),
    "duplicate usable cpu": (_host_with(cpu__usable_cpus=[0, 0, 1]), "appears twice"),
    "available above total": (_host_with(memory__available_bytes=HOST["memory"]["total_bytes"] + 1),
                              "memory.available_bytes"),
}
for name, (doc, words) in HOSTS.items():
    @case(f"host:{name}", (2,), ("--host-facts", "h.json", words))
    def _(tmp, doc=doc):
        return Run(_dry(tmp, host=_write(tmp / "h.json", doc)))

    @case(f"doctor-host:{name}", (2,), ("--host-facts", "h.json", words))
    def _(tmp, doc=doc):
        return Run(["doctor", "--host-facts", str(_write(tmp / "h.json", doc))])


@case("host:gpu memory zero, with the memory fit", (2,), ("--host-facts", "gpus[0].memory_bytes"))
def _(tmp):
    root, doc = _demo(tmp)
    return Run(["--profile", str(_profile(tmp, doc)), "--host-facts", str(_write(tmp / "h.json", _host_with(
        gpus__0__memory_bytes=0))), "--dry-run"])


@case("host:nan in gpu memory (text)", (2,), ("--host-facts", "NaN"))
def _(tmp):
    p = tmp / "h.json"
    p.write_text(json.dumps(HOST).replace('"memory_bytes": 85899345920}]', '"memory_bytes": NaN}]'))
    assert "NaN" in p.read_text()
    return Run(_dry(tmp, host=p))


def _write(p: Path, doc) -> Path:
    p.write_text(json.dumps(doc))
    return p


# 4. Secrets -----------------------------------------------------------------------------------------

@case("secret:--set list value", (2,), ("server.api_key",), secrets=("SuperSecretValue1234",))
def _(tmp):
    return Run(_dry(tmp, "--set", 'server.api_key=["SuperSecretValue1234"]'))


@case("secret:--set typo'd key", (2,), ("api_kee",), secrets=(SECRET,))
def _(tmp):
    return Run(_dry(tmp, "--set", f"server.api_kee={SECRET}"))


@case("secret:bad runtime.env HF_TOKEN", (2,), ("runtime.env",), secrets=(SECRET,))
def _(tmp):
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["runtime"]["env"] = {"HF_TOKEN": [SECRET]}
    return Run(_dry(tmp, profile=_profile(tmp, doc)))


@case("secret:10 kB api key (text)", (0,), ("server.api_key",), secrets=(BIG_SECRET,))
def _(tmp):
    return Run(_dry(tmp, "--set", f"server.api_key={BIG_SECRET}"))


@case("secret:10 kB api key (json)", (0,), ('"server.api_key"',), secrets=(BIG_SECRET,))
def _(tmp):
    return Run(_dry(tmp, "--json", "--set", f"server.api_key={BIG_SECRET}"))


@case("secret:GITHUB_PAT in runtime.env", (0,), ("GITHUB_PAT",), secrets=("ghp_" + "Q" * 36,))
def _(tmp):
    return Run(_dry(tmp, "--set", f"runtime.env.GITHUB_PAT=ghp_{'Q' * 36}"))


@case("secret:count named per_token is shown", (0,), ("--kt-max-deferred-experts-per-token 3",),
      absent=("per-token '***'",))
def _(tmp):
    return Run(_dry(tmp, "--set", "kt.max_deferred_experts_per_token=3"))


@case("secret:bad count named per_token names its value", (2,), ("max_deferred_experts_per_token", "-1"),
      absent=("***",))
def _(tmp):
    return Run(_dry(tmp, "--set", "kt.max_deferred_experts_per_token=-1"))


@case("secret:passthrough api key", (0,), ("--api-key",), secrets=(SECRET,))
def _(tmp):
    return Run([*_dry(tmp, "--json"), "--", "--api-key", SECRET])


def _fleet(tmp: Path, **server) -> Path:
    """A fleet profile with one other host `b` (the command to run there is printed)."""
    _host(tmp)
    _write(tmp / "b.json", HOST)
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["fleet"] = {"replicas": 0, "hosts": [{"name": "b", "address": "10.0.0.12", "host_facts": "b.json"}]}
    doc["server"].update(server)
    return _profile(tmp, doc, name="fleet.yaml")


for fmt in ("text", "json"):
    extra = ("--json",) if fmt == "json" else ()
    words = ('"hosts"',) if fmt == "json" else ("run this on b",)
    for label, sets in {"runtime.env HF_TOKEN": [f"runtime.env.HF_TOKEN={SECRET}"],
                        "a whole section as JSON": [f'server={{"port": 30000, "api_key": "{SECRET}"}}'],
                        "an upper-case key": [f"SERVER.api_key={SECRET}"],
                        "a whole runtime section": [f'runtime={{"python": "/usr/bin/python3", "flavor": "sglang-kt", '
                                                    f'"env": {{"MY_SECRET": "{SECRET}"}}}}']}.items():
        @case(f"secret:fleet host command, {label} ({fmt})", (0,), words, secrets=(SECRET,))
        def _(tmp, sets=sets, extra=extra):
            args = [a for s in sets for a in ("--set", s)]
            return Run(_dry(tmp, *extra, *args, profile=_fleet(tmp)))

    @case(f"secret:fleet host command, abbreviated pass-through flag ({fmt})", (0,), words, secrets=(SECRET,))
    def _(tmp, extra=extra):
        return Run([*_dry(tmp, *extra, profile=_fleet(tmp)), "--", "--api-k", SECRET])


@case("secret:passthrough abbreviated api key", (0,), ("--api-k",), secrets=(SECRET,))
def _(tmp):
    return Run([*_dry(tmp), "--", f"--api-k={SECRET}", "--admin-api", SECRET])


# 5. Values that look like flags, env names and values -------------------------------------------------

@case("flag-like served_name", (0,), ("--served-model-name=--api-key",))
def _(tmp):
    return Run(_dry(tmp, "--set", "model.served_name=--api-key"))


@case("env name with =", (3,), ("runtime.env", "A=B"))
def _(tmp):
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["runtime"]["env"] = {"A=B": "c"}
    return Run(_dry(tmp, profile=_profile(tmp, doc)))


@case("env value with NUL", (2, 3), ("runtime.env",))
def _(tmp):
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["runtime"]["env"] = {"OK_NAME": "a\x00b"}
    return Run(_dry(tmp, profile=_profile(tmp, doc)))


@case("list item starting with -", (3,), ("KT-E304", "lora.paths", "-adapter"))
def _(tmp):
    return Run(_dry(tmp, "--set", 'lora.paths=["-adapter"]'))


for fmt in ("text", "json"):
    @case(f"non-UTF-8 bytes in a path, strict stdout ({fmt})", (0,), ("--model-path", "\\udcfe"))
    def _(tmp, fmt=fmt):
        profile = _profile(tmp, name="p\udcff.yaml")  # the file name holds byte 0xff
        args = _dry(tmp, *(("--json",) if fmt == "json" else ()), "--set", "model.path=/m\udcfe", profile=profile)
        return Run(args, env={"PYTHONIOENCODING": "utf-8"})


@case("non-UTF-8 bytes in a missing profile's name, strict stderr", (2,), ("--profile", "q\\udcff.yaml"))
def _(tmp):
    return Run(["--profile", str(tmp / "q\udcff.yaml"), "--dry-run"], env={"PYTHONIOENCODING": "utf-8"})


# 6a. Identity by type, values kept as given -----------------------------------------------------------

def _fleet_with(tmp: Path, hosts: list[dict], **server) -> Path:
    _write(tmp / "b.json", HOST)
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["fleet"] = {"replicas": 0, "hosts": [{"host_facts": "b.json", **h} for h in hosts]}
    doc["server"].update(server)
    return _profile(tmp, doc, name="fleet.yaml")


for label, hosts, words in [
    ("a host named this machine", [{"name": "this machine", "address": "10.0.0.12"}], ("fleet.hosts", "own host")),
    ("a host named This Machine", [{"name": "This Machine", "address": "10.0.0.12"}], ("fleet.hosts", "own host")),
    ("two hosts of one name", [{"name": "b", "address": "10.0.0.12"}, {"name": "b", "address": "10.0.0.13"}],
     ("fleet.hosts", "'b' appears twice")),
    ("two hosts of one address", [{"name": "b", "address": "10.0.0.12"}, {"name": "c", "address": "10.0.0.12"}],
     ("fleet.hosts", "also the address of b")),
    ("remote address 0.0.0.0", [{"name": "b", "address": "0.0.0.0"}], ("fleet.hosts", "0.0.0.0", "wildcard")),
    ("remote address ::", [{"name": "b", "address": "::"}], ("fleet.hosts", "wildcard")),
    ("remote address 127.0.0.1", [{"name": "b", "address": "127.0.0.1"}], ("fleet.hosts", "loopback")),
    ("remote address [::1]", [{"name": "b", "address": "[::1]"}], ("fleet.hosts", "loopback")),
    ("remote address localhost", [{"name": "b", "address": "localhost"}], ("fleet.hosts", "localhost")),
    ("remote address with a space", [{"name": "b", "address": "10.0.0.1 --api-key x"}], ("fleet.hosts", "host name")),
]:
    @case(f"fleet:{label}", (2,), words)
    def _(tmp, hosts=hosts):
        return Run(_dry(tmp, profile=_fleet_with(tmp, hosts)))


for extra in ((), ("--json",)):
    @case(f"fleet:check {' '.join(extra)} on a fleet profile".replace("  ", " "), (0, 3), ("findings",))
    def _(tmp, extra=extra):
        profile = _fleet_with(tmp, [{"name": "b", "address": "10.0.0.12"}])
        return Run(["check", "--profile", str(profile), "--host-facts", str(_host(tmp)), *extra])


@case("fleet:an IPv6 zone is %25 in URLs (RFC 6874)", (0,), ("http://[fe80::1%25eth0]:30001",),
      absent=("[fe80::1%eth0]",))
def _(tmp):
    return Run(_dry(tmp, "--json", profile=_fleet_with(tmp, [{"name": "b", "address": "fe80::1%eth0"}])))


@case("fleet:server.host 0.0.0.0 is loopback for local replicas only", (0,),
      ("http://127.0.0.1:30001", "http://10.0.0.12:30001"), absent=("http://0.0.0.0",))
def _(tmp):
    profile = _fleet_with(tmp, [{"name": "b", "address": "10.0.0.12", "replicas": 1}], host="0.0.0.0")
    return Run(_dry(tmp, "--json", "--set", "fleet.replicas=1", profile=profile))


@case("fleet:host_facts of an extends parent is relative to the parent", (0,), ("run this on b",))
def _(tmp):
    (tmp / "parent").mkdir()
    (tmp / "child").mkdir()
    _write(tmp / "parent" / "b.json", HOST)
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["fleet"] = {"replicas": 0, "hosts": [{"name": "b", "address": "10.0.0.12", "host_facts": "b.json"}]}
    _profile(tmp / "parent", doc, name="base.yaml")
    child = _profile(tmp / "child", name="p.yaml", text="extends: ../parent/base.yaml\nserver: {port: 30100}\n")
    return Run(_dry(tmp, profile=child))


for key, value, words in [("runtime.cuda_visible_devices", "0,0,1", ("runtime.cuda_visible_devices", "GPU 0 twice")),
                          ("runtime.cuda_visible_devices", "", ("runtime.cuda_visible_devices", "empty")),
                          ("runtime.cuda_visible_devices", "0,,1", ("runtime.cuda_visible_devices", "empty item")),
                          ("runtime.python", "", ("runtime.python", "empty")),
                          ("runtime.python", "  ", ("runtime.python", "empty"))]:
    @case(f"value:{key}={value!r}", (2,), words, absent=("Value error",))
    def _(tmp, key=key, value=value):
        return Run(_dry(tmp, "--set", f"{key}={value}"))


@case("value:empty runtime.python in the profile", (2,), ("profile", "p.yaml", "runtime.python", "empty"))
def _(tmp):
    doc = yaml.safe_load(_profile(tmp).read_text())
    doc["runtime"]["python"] = ""
    return Run(_dry(tmp, profile=_profile(tmp, doc)))


@case("value:env map keys keep their case", (0,), ('"HF_TOKEN": "***"',), secrets=(SECRET,), absent=('"hf_token"',))
def _(tmp):
    return Run(_dry(tmp, "--json"), env={"KT_LAUNCH_RUNTIME__ENV__HF_TOKEN": SECRET})


@case("value:--set KT.CPUINFER is blamed on --set", (2,), ("--set KT.CPUINFER", "unknown key"),
      absent=("error: profile",))
def _(tmp):
    return Run(_dry(tmp, "--set", "KT.CPUINFER=5"))


# 6. Atomic writes -------------------------------------------------------------------------------------

@case("schema -o on a full disk keeps the old file", (2,), ("--output", "not changed"))
def _(tmp):
    out = tmp / "schema.json"
    out.write_text('{"old": true}\n')
    return Run(["schema", "-o", str(out)], protect=[out], fsize=4096)


@case("schema -o /dev/full", (2,), ("--output /dev/full", "No space left"))
def _(tmp):
    return Run(["schema", "-o", "/dev/full"])


@case("schema -o into a missing directory", (2,), ("--output",))
def _(tmp):
    return Run(["schema", "-o", str(tmp / "no" / "s.json")])


# 7. Output errors -------------------------------------------------------------------------------------

for mode in ("full", "closed", "epipe"):
    @case(f"stdout:{mode}", (1,), ("cannot write the output",))
    def _(tmp, mode=mode):
        return Run(_dry(tmp), stdout=mode)

    @case(f"stdout:{mode} (schema)", (1,), ("cannot write the output",))
    def _(tmp, mode=mode):
        return Run(["schema"], stdout=mode)


# -- the runner -----------------------------------------------------------------------------------

def _launch(tmp: Path, run: Run) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **run.env}
    env.pop("KT_LAUNCH_PROFILE_DIR", None)
    if "KT_LAUNCH_CACHE_DIR" not in run.env:  # each case its own cache, not the worker's (tests/conftest.py)
        env["KT_LAUNCH_CACHE_DIR"] = str(tmp / "default-cache")
    env.setdefault("COLUMNS", "9999")  # words and secrets are looked for in unwrapped lines
    argv = [sys.executable, "-c", run.python] if run.python is not None else [sys.executable, "-m", "kt_launch",
                                                                             *run.args]

    def limits():
        if run.fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (run.fsize, run.fsize))

    stdout, close = subprocess.PIPE, []
    if run.stdout == "full":
        stdout = open("/dev/full", "wb")
        close.append(stdout)
    elif run.stdout == "epipe":
        r, w = os.pipe()
        os.close(r)  # the reader is gone before the first write
        stdout = w
        close.append(w)
    try:
        if run.stdout == "closed":
            # `>&-`: fd 1 closed in the child (pass_fds cannot express it; close it before exec)
            def limits_closed():
                limits()
                os.close(1)
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=None, stderr=subprocess.PIPE, cwd=tmp,
                               env=env, timeout=LIMIT_S, preexec_fn=limits_closed)
            return p.returncode, "", p.stderr.decode(errors="replace")
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, cwd=tmp, env=env,
                           timeout=LIMIT_S, preexec_fn=limits)
    finally:
        for c in close:
            c.close() if hasattr(c, "close") else os.close(c)
    out = p.stdout.decode(errors="replace") if isinstance(p.stdout, bytes) else ""
    return p.returncode, out, p.stderr.decode(errors="replace")


def _in_process(run: Run) -> bool:
    """Whether the case's subject is its input (then cli.main runs it here, without a process start of its own)
    rather than the process: its stdout descriptor, an RLIMIT, PYTHONIOENCODING or a snippet of its own."""
    return run.python is None and run.stdout == "pipe" and run.fsize is None and "PYTHONIOENCODING" not in run.env


def _call(tmp: Path, run: Run, monkeypatch, capsys) -> tuple[int, str, str]:
    """`_launch` in this process: the same environment (set through monkeypatch) and working directory."""
    monkeypatch.delenv("KT_LAUNCH_PROFILE_DIR", raising=False)
    if "KT_LAUNCH_CACHE_DIR" not in run.env:
        monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp / "default-cache"))
    if "COLUMNS" not in run.env and "COLUMNS" not in os.environ:
        monkeypatch.setenv("COLUMNS", "9999")
    for k, v in run.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp)
    capsys.readouterr()
    try:
        rc = no_hang(lambda: main(list(run.args)), LIMIT_S)
    finally:
        out, err = capsys.readouterr()
    return rc, out, err


def _leftovers(tmp: Path) -> list[str]:
    return [str(p) for p in tmp.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp-")
            or p.name in ("~", "rel")]  # a cache written relative to the working directory


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(tmp_path, name, monkeypatch, capsys):
    c = CASES[name]
    run = c.build(tmp_path)
    before = {p: p.read_bytes() for p in run.protect}
    try:
        rc, out, err = _call(tmp_path, run, monkeypatch, capsys) if _in_process(run) else _launch(tmp_path, run)
    except (subprocess.TimeoutExpired, Hang):
        pytest.fail(f"{name}: no answer within {LIMIT_S} s (a hang)")
    both = out + err
    assert "Traceback" not in both, both[-3000:]
    assert rc in c.rc, f"exit {rc}, expected {c.rc}\n{both[-3000:]}"
    for w in c.words:
        assert w in both, f"{w!r} missing from\n{both[-3000:]}"
    for s in c.secrets:
        assert s not in both and s[:12] not in both, f"a secret leaked:\n{both[-3000:]}"
    for a in c.absent:
        assert a not in both, f"{a!r} should not appear in\n{both[-3000:]}"
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} was changed"
    assert not _leftovers(tmp_path), _leftovers(tmp_path)
    if run.stdout != "pipe":
        assert len(err.strip().splitlines()) == 1, err  # one line, nothing else


def test_the_corpus_covers_every_class():
    prefixes = {n.split(":")[0] for n in CASES}
    for need in ("host-facts", "doctor-host-facts", "config.json", "adapter_config.json", "index.json", "profile",
                 "extends", "tuning.json", "sglang-cache", "install-cache", "gpus.json", "host", "doctor-host", "secret", "schema -o on a full disk keeps the old file",
                 "stdout"):
        assert need in prefixes or need in CASES, need
    assert len(CASES) >= 100


@pytest.mark.parametrize("command", [["doctor"], ["--profile", "demo", "--no-check", "--dry-run"]])
def test_no_proc_is_a_finding_not_a_traceback(tmp_path, command):
    """A container without /proc: psutil's FileNotFoundError becomes a host-facts note (issue 18). A real
    empty /proc: a private mount namespace with a tmpfs over it."""
    script = 'mount -t tmpfs none /proc && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", sys.executable, "-m",
            "kt_launch", *command]
    env = {**os.environ, "PYTHONPATH": str(REPO), "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache")}
    probe = subprocess.run([*argv[:7], "sh", "true"], capture_output=True, text=True, timeout=LIMIT_S)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount an empty /proc here: {probe.stderr.strip()[-200:]}")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=LIMIT_S * 3, env=env, cwd=tmp_path)
    both = p.stdout + p.stderr
    assert "Traceback" not in both and p.returncode in (0, 3), both[-3000:]
    assert "psutil could not read the memory size" in both and "is /proc mounted?" in both, both[-3000:]
