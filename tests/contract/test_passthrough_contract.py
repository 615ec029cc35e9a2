"""kt-launch's reading of SGLang's command line (core/sglang_argv.py, from the recorded option table) agrees with
the real parsers of sglang-kt 0.7.2 and sglang 0.5.23 on generated command lines, and its reading of a `--config`
file agrees with sglang-kt's own ConfigArgumentMerger; `kt-launch check` with the real parser refuses an unknown
flag (exit 3) and passes a valid one."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from kt_launch.core.sglang_config import SglangConfigFile
from kt_launch.facts.sglang import parse_many_with_real_parser
from kt_launch.facts.sglang_config import read_sglang_config
from kt_launch.core.sglang_argv import GENERATED, Word, config_words, parse

from contract.conftest import REPO

JUDGED_TYPES = (None, "str", "int", "float")
STANDARD = ("_StoreAction", "_StoreTrueAction", "_HelpAction", "DeprecatedAction")
VALUES = ["1", "-1", "0.5", "x", "a b", "--", "-x", "auto", "", "=", "--x y", "7"]


def _vocab(rng: random.Random, table) -> str:
    names = sorted(table)
    kind = rng.choice([0] * 10 + [1] * 2 + [2] * 3 + [3] + [4] * 3)
    name = rng.choice(names)
    if kind == 0:
        return name
    if kind == 1 and len(name) > 3:
        return name[:rng.randrange(3, len(name))]  # an abbreviation, unique or not
    if kind == 2:
        o = table[name]
        value = str(rng.choice(o.choices)) if o.choices and rng.random() < 0.7 else rng.choice(VALUES)
        return f"{name}={value}"
    if kind == 3:
        return "--zz-" + "".join(rng.choice("abc-") for _ in range(rng.randrange(1, 6)))
    o = table[name]
    if o.choices and rng.random() < 0.5:
        return str(rng.choice(o.choices))
    return rng.choice(VALUES)


def _good(o) -> str:
    return {"int": "3", "float": "0.25"}.get(o.type, "some value")


def _argvs(facts, n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    table = {s: o for s, o in facts.options.items() if o.action in STANDARD and o.type in JUDGED_TYPES}
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randrange(1, 4)):
            w = _vocab(rng, table)
            words.append(w)
            o = table.get(w)
            if o is not None and o.takes_value and rng.random() < 0.9:
                words.append(str(rng.choice(o.choices)) if o.choices else _good(o) if rng.random() < 0.7 else
                             rng.choice(VALUES))
        out.append(words)
    return out


def _refused(facts, words: list[str]) -> bool | None:
    """kt-launch's verdict: would SGLang's parser stop on these words? None: a flag whose check is SGLang's own
    code (a type callable or action kt-launch does not judge), so no verdict to compare."""
    parsed = parse([Word("--model-path", GENERATED), Word("m", GENERATED), *(Word(w, "after --") for w in words)],
                   facts.options, facts.allow_abbrev is not False)
    for u in parsed.uses:
        if u.action is not None and (u.action.type not in JUDGED_TYPES or u.action.action not in STANDARD):
            return None
    return bool(parsed.strays) or any(u.action is None or u.problem or u.action.action == "_HelpAction"
                                      for u in parsed.uses)


@pytest.mark.parametrize("flavour", ["sglang-kt", "sglang"])
def test_judgement_agrees_with_the_real_parser(real_venvs, real_facts, flavour):
    facts = real_facts[flavour]
    argvs = _argvs(facts, 600, seed=20261207)
    outcomes = parse_many_with_real_parser(real_venvs[flavour], [["--model-path", "m", *a] for a in argvs])
    compared = 0
    for words, outcome in zip(argvs, outcomes):
        mine = _refused(facts, words)
        if mine is None:
            continue
        compared += 1
        assert mine == (not outcome.ok), (words, outcome.error)
    assert compared > 400
    assert sum(not o.ok for o in outcomes) > 60 and sum(o.ok for o in outcomes) > 60  # both verdicts exercised


MERGE = r"""
import argparse, json, sys
from sglang.srt.server_args import ServerArgs
from sglang.srt.server_args_config_parser import ConfigArgumentMerger
parser = argparse.ArgumentParser()
ServerArgs.add_cli_args(parser)
merger = ConfigArgumentMerger(parser)
out = []
for path in json.load(sys.stdin):
    try:
        out.append({"args": merger.merge_config_with_args(["--config", path])})
    except Exception as e:
        out.append({"error": "%s: %s" % (type(e).__name__, e)})
sys.stdout.write(json.dumps(out))
"""


def test_config_words_agree_with_sglang_kt_merger(real_venvs, real_facts, tmp_path):
    facts = real_facts["sglang-kt"]
    rng = random.Random(7)
    names = sorted({s[2:] for s in facts.options if s.startswith("--")})
    scalars = [1, 0, 2.5, "x", "a b", True, False, None, "-x", [1, "b"], [], ["x y"]]
    paths = []
    for i in range(60):
        keys = rng.sample(names, rng.randrange(1, 5))
        if rng.random() < 0.3:
            keys.append(rng.choice(names).replace("-", "_"))
        doc = {k: rng.choice(scalars) for k in keys}
        p = tmp_path / f"c{i}.yaml"
        p.write_text(json.dumps(doc))  # JSON is YAML: the same values under YAML 1.1 (SGLang) and 1.2 (kt-launch)
        paths.append(str(p))
    r = subprocess.run([real_venvs["sglang-kt"], "-c", MERGE], input=json.dumps(paths), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    real = json.loads(r.stdout)
    for path, got in zip(paths, real):
        cfg = read_sglang_config(["--config", path])
        assert isinstance(cfg, SglangConfigFile) and cfg.problem is None
        unsupported = [k for k, _ in cfg.entries if k.replace("-", "_") in facts.config_merger.unsupported_keys]
        if "error" in got:
            assert unsupported and "Unsupported config option" in got["error"], got
            continue
        assert not unsupported
        assert [w.text for w in config_words(cfg.entries, facts.config_merger, path)] == got["args"]


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kt_launch", "check", *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def test_check_with_the_real_parser(real_venvs, tmp_path, facts_cache):
    prof = tmp_path / "p.yaml"
    prof.write_text("model: {path: /m}\nkt: {weight_path: /w, method: AMXINT8}\n"
                    f"runtime: {{python: {real_venvs['sglang-kt']}}}\n")
    host = REPO / "tests" / "data" / "hosts" / "h200_1x.json"
    base = ["--profile", str(prof), "--no-check", "--host-facts", str(host), "--json"]
    r = _check(*base, "--", "--bogus-flag", "1")
    assert r.returncode == 3, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert [f["fields"]["flag"] for f in doc["findings"] if f["code"] == "KT-E306"] == ["--bogus-flag"]
    r = _check(*base, "--", "--log-level", "info", "--enable-metrics")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [f for f in json.loads(r.stdout)["findings"] if f["code"].startswith(("KT-E3", "KT-W32", "KT-I32"))]
