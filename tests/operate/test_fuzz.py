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
from operate.support import no_hang, write_host

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
        if k.startswith("KT_LAUNCH_") and k != "KT_LAUNCH_CACHE_DIR":  # the worker's own cache stays
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
        assert out.startswith(("OK", "BLOCKED"))  # the verdict comes first
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


@fuzz(700)
@given(doc=profiles())
def test_random_profiles(prof, capsys, doc):
    prof.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    run(capsys, prof)


@fuzz(500)
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


@fuzz(600)
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


# -- the bounded reader: every kind of JSON file kt-launch reads ---------------------------------------

def _reader_kinds():
    from kt_launch.facts import reader

    return [k for k in vars(reader).values() if isinstance(k, reader.Kind)]


@st.composite
def hostile_json(draw) -> bytes:
    """JSON-ish text as a damaged or malicious file holds it: deep nesting, duplicate keys, NaN, 1e400,
    huge integers, cut-off documents, junk bytes, or a plausible document."""
    import json

    kind = draw(st.sampled_from(["deep", "deep-mixed", "dup", "const", "bigint", "cut", "junk", "doc"]))
    if kind == "deep":
        n = draw(st.integers(1, 5000))
        o, c = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (o * n + "1" + c * n).encode()
    if kind == "deep-mixed":
        n = draw(st.integers(1, 400))
        pairs = draw(st.lists(st.sampled_from([("[", "]"), ('{"k":', "}"), ('[1,{"x":', "}]")]), min_size=n,
                              max_size=n))
        return ("".join(o for o, _ in pairs) + "0" + "".join(c for _, c in reversed(pairs))).encode()
    if kind == "dup":
        key = draw(text)
        inner = json.dumps(draw(json_values))
        return ("{" + f"{json.dumps(key)}: {inner}, " * draw(st.integers(2, 3)) + '"z": 0}').encode()
    if kind == "const":
        tok = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1E+309"]))
        return ('{"a": [1, ' + tok + "]}").encode()
    if kind == "bigint":
        return ('{"a": ' + "9" * draw(st.integers(300, 6000)) + "}").encode()
    doc = json.dumps(draw(json_values)).encode()
    if kind == "cut":
        return doc[: draw(st.integers(0, max(0, len(doc) - 1)))]
    if kind == "junk":
        return draw(st.binary(max_size=64)) + doc
    return doc


@fuzz(400)
@given(data=hostile_json())
def test_reader_on_hostile_json(tmp_path, data):
    """Every kind either returns a document within its depth limit and free of non-finite numbers, or a
    ReadError naming the file; never RecursionError, ValueError or anything else."""
    import math

    from kt_launch.facts.reader import ReadError, parse_json, read_json

    path = tmp_path / "f.json"
    path.write_bytes(data)

    def depth(x, d=1):
        stack, worst = [(x, d)], d
        while stack:
            n, d = stack.pop()
            worst = max(worst, d)
            kids = n.values() if isinstance(n, dict) else n if isinstance(n, list) else ()
            stack.extend((k, d + 1) for k in kids)
            if isinstance(n, float):
                assert math.isfinite(n)
        return worst

    for kind in _reader_kinds():
        for attempt in (lambda: read_json(path, kind), lambda: parse_json(path, data, kind)):
            try:
                doc = attempt()
            except ReadError as e:
                assert str(e).startswith(f"{kind.what} {path}: "), str(e)
            else:
                assert depth(doc) <= kind.max_depth


SPECIAL = ("fifo", "dir", "devzero", "dangling")


def _place(path, what, data: bytes = b"{}") -> None:
    """Put a special file (or `data`) where kt-launch will read a JSON file."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    if what == "fifo":
        os.mkfifo(path)
    elif what == "dir":
        path.mkdir()
    elif what == "devzero":
        os.symlink("/dev/zero", path)
    elif what == "dangling":
        os.symlink(path.parent / "nowhere", path)
    else:
        path.write_bytes(data)


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory):
    from devtools import synthetic

    root = tmp_path_factory.mktemp("demo")
    synthetic.demo(root)
    return root


@fuzz(120)
@given(target=st.sampled_from(["host", "config", "adapter", "index", "tuning"]),
       what=st.sampled_from(SPECIAL + ("data",)), data=hostile_json())
def test_hostile_files_wherever_kt_launch_reads_json(tmp_path_factory, demo_tree, capsys, target, what, data):
    """The same files in place of host facts, config.json, adapter_config.json, the safetensors index and the
    tuning cache, through `kt-launch check`: exit 0, 2 or 3, never a hang or a traceback; a file kt-launch
    reads is named when it is what failed."""
    import json
    import shutil

    from devtools import synthetic
    from operate.support import HOST

    tmp = tmp_path_factory.mktemp("case")
    root = tmp / "t"
    shutil.copytree(demo_tree, root, symlinks=True)
    host = tmp / "host.json"
    host.write_text(json.dumps(HOST))
    cache = tmp / "cache"
    cache.mkdir()
    spot = {"host": host, "config": root / "model" / "config.json", "adapter": root / "lora" / "adapter_config.json",
            "index": root / "model" / "model.safetensors.index.json", "tuning": cache / "tuning.json"}[target]
    _place(spot, what, data)
    prof = tmp / "p.yaml"
    prof.write_text(yaml.safe_dump(synthetic.moe_lora_profile(root)))
    old = os.environ.get("KT_LAUNCH_CACHE_DIR")
    os.environ["KT_LAUNCH_CACHE_DIR"] = str(cache)
    try:
        rc = no_hang(lambda: main(["check", "--profile", str(prof), "--host-facts", str(host)]))
    finally:
        if old is None:
            os.environ.pop("KT_LAUNCH_CACHE_DIR", None)
        else:
            os.environ["KT_LAUNCH_CACHE_DIR"] = old
    out, err = capsys.readouterr()
    assert rc in (0, 2, 3), (rc, out, err)
    assert "Traceback" not in out + err
    if rc == 2:
        assert str(host) in err and target == "host", err
    if target == "tuning" and what not in ("data", "dangling"):  # a dangling link is a plain miss
        assert "tuning.json" in err  # a warning naming the cache file; it is rebuilt on the next write


@st.composite
def numa_layouts(draw):
    """Host facts with random CPUs, usable CPUs and NUMA nodes (ids may repeat, CPUs may be shared)."""
    import copy

    from operate.support import HOST

    logical = draw(st.integers(1, 24))
    doc = copy.deepcopy(HOST)
    doc["cpu"].update(logical_cpus=logical, physical_cores=draw(st.integers(1, logical)),
                      usable_cpus=draw(st.lists(st.integers(0, logical + 2), max_size=logical + 1)))
    doc["numa"] = [{"id": draw(st.integers(0, 3)), "cpus": draw(st.lists(st.integers(0, logical + 2), max_size=12))}
                   for _ in range(draw(st.integers(0, 4)))]
    doc["gpus"] = [{"index": draw(st.integers(0, 2)), "memory_bytes": draw(st.integers(-1, 1 << 40))}
                   for _ in range(draw(st.integers(0, 3)))]
    return doc


@fuzz(500)
@given(doc=numa_layouts())
def test_host_facts_are_a_possible_machine_or_refused_by_field(doc):
    """Accepted host facts never need an invented NUMA node: every usable CPU is in exactly one node, node ids
    and GPU indices are unique, sizes are non-negative. Anything else is refused naming the field."""
    from kt_launch.facts.host import _short_validation, host_from_json

    try:
        h = host_from_json(doc)
    except ValueError as e:
        msg = _short_validation(e)
        assert any(f in msg for f in ("cpu", "numa", "gpus", "memory")), msg
        return
    assert h.numa and len({n.id for n in h.numa}) == len(h.numa)
    owners = [n.id for n in h.numa for c in n.cpus]
    assert len(owners) == len({c for n in h.numa for c in n.cpus})
    usable = set(h.cpu.usable_cpus)
    assert usable <= {c for n in h.numa for c in n.cpus}
    assert set(h.cpu_numa_nodes) <= set(h.numa)  # chosen from the file, never invented
    assert len({g.index for g in h.gpus}) == len(h.gpus) and all(g.memory_bytes >= 0 for g in h.gpus)


@fuzz(400)
@given(changes=st.dictionaries(st.sampled_from([
    "hidden_size", "num_hidden_layers", "n_routed_experts", "num_experts", "num_local_experts", "num_experts_per_tok",
    "moe_intermediate_size", "intermediate_size", "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step",
    "mlp_only_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "kv_lora_rank", "vocab_size",
    "quantization_config", "text_config", "torch_dtype", "model_type"]), json_values, max_size=5))
def test_model_config_values_of_any_type_are_a_message_not_a_crash(changes):
    """config.json as a damaged file holds it: every key read may have any JSON type."""
    from kt_launch.facts.model import ModelConfigError, shape_from_config
    from devtools.synthetic import TINY

    cfg = {**TINY.config(), **changes}
    try:
        m = shape_from_config(cfg, "/m/config.json")
    except ModelConfigError as e:
        assert str(e).startswith("/m/config.json: ")
    else:
        assert all(0 <= i < m.num_layers for i in m.moe_layers)
