"""Fuzzing the edge: random profiles (structures, wrong types, unicode, huge numbers, nan/inf, anchors and
aliases, alias bombs, non-mapping roots, binary garbage), `--set` strings and KT_LAUNCH_* env, through the real
CLI in-process. Never a traceback or an uncaught exception; exit 0, 2 or 3; an exit 2 names the file, the
`--set` item or the env var. KT_FUZZ_SCALE=10 runs ten times as many examples."""

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kt_launch.cli import main
from kt_launch.core.profile import UserConfig
from operate.support import write_host

SCALE = float(os.environ.get("KT_FUZZ_SCALE", "1"))


def fuzz(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _fields(model) -> dict[str, list[str]]:
    out = {}
    for name, f in model.model_fields.items():
        ann = f.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")), None)
        out[name] = list(sub.model_fields) if sub is not None else []
    return out


FIELDS = _fields(UserConfig)
DOTTED = [f"{s}.{k}" for s, ks in FIELDS.items() for k in ks] + list(FIELDS)

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
names = st.one_of(st.sampled_from(sorted({k for ks in FIELDS.values() for k in ks} | set(FIELDS))), text)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10 ** 60), max_value=10 ** 60),
    st.floats(allow_nan=True, allow_infinity=True), text, st.binary(max_size=8),
    st.sampled_from(["AMXINT4", "amxbf16_sft", "AMXINT8_SFT", "sglang-kt", "kt-moe-lora", "auto", "0", "-1",
                     "/tmp", "", " ", "null", "true", "0.0.0.0", "65536", "ðŸš€", "\u202e", "a=b", "[0,1]"]),
)
values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(names, ch, max_size=4),
                      max_leaves=10)

TRICKY = ["9" * 5000, "-" + "9" * 4400, ".nan", ".inf", "-.inf", "0x1F", "0o17", "1_000", "1e400", "!!binary aGVsbG8=",
          "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "*undefined", "&a 1",
          "~", "[", "{a: *b}", "!!set {a, b}", "!!timestamp 2001-12-14", "2001-12-14", "!!omap [a: 1]",
          "{<<: {x: 1}}", "'\\x00'", "\"\\u0000\"", "!!str", "!!int x", "!!float nan", "!!bool maybe", "? complex",
          "[1, [2, [3]]]", "{cpuinfer: 4}", "|\n  block", ">-\n  folded", "- a\n- b", "\t", "@reserved", "`tick",
          "%YAML 1.1", "--- x", "...", "!<tag:yaml.org,2002:int> 3", "!custom 1", "0b101", "+12", "-0", "1.5",
          "12:30:45", "é", "\U0001F600", "中文", "\u0085", "\ufeff"]


@pytest.fixture
def env_clean(monkeypatch):
    for k in list(os.environ):
        if k.startswith("KT_LAUNCH_"):
            monkeypatch.delenv(k)


def run(capsys, profile, sets=(), extra=()):
    host = profile.parent / "host.json"
    args = ["--profile", str(profile), "--dry-run", "--no-check", "--host-facts", str(host)]
    for s in sets:
        args += ["--set", s]
    rc = main([*args, *extra])
    out, err = capsys.readouterr()
    assert rc in (0, 2, 3), (rc, out, err)
    assert "Traceback" not in out + err
    if rc == 2:
        assert str(profile.parent) in err or "--set" in err or "KT_LAUNCH_" in err, err  # the file (or its extends)
        assert err.startswith("kt-launch: error: ")
    else:
        assert out.startswith("# kt-launch plan")
    return rc, out, err


@pytest.fixture
def prof(tmp_path, env_clean):
    write_host(tmp_path)
    (tmp_path / "base.yaml").write_text("model: {path: /base/model}\nkt: {weight_path: /w, method: AMXINT8}\n")
    return tmp_path / "profile.yaml"


@st.composite
def profiles(draw):
    doc: dict = {}
    if draw(st.integers(0, 9)):
        doc["model"] = {"path": draw(st.one_of(st.just("/m"), text))}
    for section, keys in FIELDS.items():
        if not keys or not draw(st.booleans()):
            continue
        if draw(st.integers(0, 9)) == 0:
            doc[section] = draw(values)  # a whole section of the wrong type
            continue
        sec = doc.setdefault(section, {}) if isinstance(doc.get(section), dict) else {}
        for k in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            sec[k] = draw(values)
        if draw(st.integers(0, 5)) == 0:
            sec[draw(text)] = draw(values)  # a typo or junk key
        doc[section] = sec
    if draw(st.integers(0, 5)) == 0:
        doc[draw(names)] = draw(values)
    if draw(st.integers(0, 8)) == 0:
        doc["extends"] = draw(st.sampled_from(["base.yaml", "profile.yaml", "missing.yaml", "", "..", 5, None,
                                               ["base.yaml"], "base.yaml/x"]))
    if draw(st.integers(0, 4)) == 0 and len(doc) >= 2:  # the same object twice: the dumper writes &id/*id
        shared = draw(values)
        for key in draw(st.lists(st.sampled_from(sorted(doc, key=str)), min_size=2, max_size=3)):
            if isinstance(doc[key], dict):
                doc[key][draw(names)] = shared
    return doc


@fuzz(1500)
@given(doc=profiles())
def test_random_profiles(prof, capsys, doc):
    prof.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    run(capsys, prof)


@fuzz(1000)
@given(path=st.sampled_from(DOTTED), token=st.one_of(st.sampled_from(TRICKY), text), indent=st.booleans())
def test_tricky_yaml_values(prof, capsys, path, token, indent):
    section, _, key = path.partition(".")
    body = (f"model:\n  path: /m\n{section}:\n  {key}: {token}\n" if key
            else f"model: {{path: /m}}\n{section}: {token}\n")
    if indent:
        body = body.replace("\n  ", "\n    ")
    prof.write_text(body, encoding="utf-8")
    run(capsys, prof)


@fuzz(300)
@given(depth=st.integers(1, 9), width=st.integers(1, 12), kind=st.sampled_from(["list", "map"]),
       where=st.sampled_from(["kt.numa_nodes", "runtime.env", "server.extra_args", "junk.key", "lora.paths"]))
def test_alias_bombs_are_refused_or_harmless(prof, capsys, depth, width, kind, where):
    lines = ['a0: &a0 "lol"'] if kind == "list" else ["a0: &a0 {x: lol}"]
    for i in range(1, depth + 1):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]" if kind == "list" else
                     f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(width))}}}")
    section, key = where.split(".")
    # the anchors live under a key of the target section so the profile's keys stay few
    body = "model: {path: /m}\n" + f"{section}:\n" + "".join(f"  {line}\n" for line in lines)
    body += f"  {key}: *a{depth}\n"
    prof.write_text(body, encoding="utf-8")
    rc, _, err = run(capsys, prof)
    if width ** depth > 200_000:
        assert rc == 2 and "alias" in err


def test_self_referencing_alias(prof, capsys):
    prof.write_text("model: {path: /m}\nkt:\n  numa_nodes: &a [0, *a]\n")
    rc, _, err = run(capsys, prof)
    assert rc == 2 and "alias" in err


def test_billion_laughs(prof, capsys):
    lines = ['lol0: &l0 "lol"'] + [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    prof.write_text("model: {path: /m}\nruntime:\n  env:\n" + "".join(f"    {x}\n" for x in lines)
                    + "  flavor: *l9\n")
    rc, _, err = run(capsys, prof)
    assert rc == 2 and "refused" in err and str(prof) in err


@fuzz(500)
@given(data=st.binary(max_size=300))
def test_binary_garbage(prof, capsys, data):
    prof.write_bytes(data)
    run(capsys, prof)


@fuzz(300)
@given(root=values)
def test_non_mapping_and_odd_roots(prof, capsys, root):
    prof.write_text(yaml.safe_dump(root, allow_unicode=True), encoding="utf-8")
    rc, _, _ = run(capsys, prof)
    if not isinstance(root, dict) and root is not None:
        assert rc == 2


@fuzz(1200)
@given(sets=st.lists(st.one_of(
    text,
    st.builds(lambda k, v: f"{k}={v}", st.one_of(st.sampled_from(DOTTED), text), st.one_of(st.sampled_from(TRICKY),
                                                                                              text)),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(DOTTED), st.sampled_from(
        ["48", "0", "-3", "1e3", "nan", "inf", "null", "[0,1]", "[", "{}", '{"a": 1}', "true", "yes", "AMXINT4",
         "9" * 5000, "[" * 500, "[0," * 2000])),
), max_size=4))
def test_random_set_strings(prof, capsys, sets):
    prof.write_text("model: {path: /m}\nkt: {weight_path: /w, method: AMXINT8}\n")
    run(capsys, prof, sets=sets)


@fuzz(300)
@given(env=st.dictionaries(
    st.one_of(st.sampled_from([f"KT_LAUNCH_{p.upper().replace('.', '__')}" for p in DOTTED]),
              st.builds(lambda s: "KT_LAUNCH_" + s, st.from_regex(r"[A-Z_]{1,20}", fullmatch=True))),
    st.one_of(st.sampled_from(TRICKY), text).filter(lambda v: "\x00" not in v), max_size=3))
def test_random_env(prof, capsys, env):
    prof.write_text("model: {path: /m}\nkt: {weight_path: /w, method: AMXINT8}\n")
    old = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        run(capsys, prof)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_safe_loading_never_constructs_objects(prof, capsys, tmp_path):
    marker = tmp_path / "pwned"
    prof.write_text(f"model: {{path: /m}}\nkt: !!python/object/apply:os.system ['touch {marker}']\n")
    rc, _, err = run(capsys, prof)
    assert rc == 2 and not marker.exists()


def test_nan_and_inf_floats_are_exit_2_naming_the_field(prof, capsys):
    for field, token in (("alpha", ".nan"), ("alpha", ".inf"), ("alpha", "-.inf"), ("rank", ".inf")):
        values = {"alpha": "16", "rank": "8", field: token}
        prof.write_text(f"model: {{path: /m}}\nmoe_lora: {{path: /l, alpha: {values['alpha']}, rank: {values['rank']}}}\n")
        rc, out, err = run(capsys, prof)
        assert rc == 2 and f"moe_lora.{field}" in err, (token, err)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(text, ch, max_size=4), max_leaves=12)


@st.composite
def host_docs(draw):
    import copy

    from operate.support import HOST

    doc = copy.deepcopy(HOST)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(doc)))
        if draw(st.integers(0, 4)) == 0:
            doc[section] = draw(json_values)
        elif isinstance(doc[section], dict):
            doc[section][draw(st.sampled_from(sorted(doc[section]) + ["junk"]))] = draw(json_values)
        elif isinstance(doc[section], list) and doc[section] and isinstance(doc[section][0], dict) \
                and doc[section][0]:
            doc[section][0][draw(st.sampled_from(sorted(doc[section][0])))] = draw(json_values)
    return draw(st.one_of(st.just(doc), json_values)) if draw(st.integers(0, 9)) == 0 else doc


@fuzz(400)
@given(doc=host_docs(), doctor=st.booleans())
def test_random_host_facts_files(prof, capsys, doc, doctor):
    import json

    prof.write_text("model: {path: /m}\nkt: {weight_path: /w, method: AMXINT8}\n")
    host = prof.parent / "host.json"
    host.write_text(json.dumps(doc))
    try:
        if doctor:
            rc = main(["doctor", "--json", "--host-facts", str(host)])
            out, err = capsys.readouterr()
            assert rc in (0, 2, 3) and "Traceback" not in out + err
            if rc == 2:
                assert str(host) in err
        else:
            rc, _, err = run(capsys, prof)
            if rc == 2:
                assert str(host) in err
    finally:
        write_host(prof.parent)
