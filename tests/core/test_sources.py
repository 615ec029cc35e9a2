"""Profile sources: precedence, extends, provenance, and bad input naming the key path and source."""

import pytest

from kt_launch.facts.profile import ConfigError, load_config, parse_sets

BASE = "model: {path: /m}\nkt: {cpuinfer: 10, method: amxint8}\n"


def test_precedence_default_profile_env_cli(write_profile):
    p = write_profile(BASE)
    cfg, prov = load_config(p, {}, [])
    assert cfg.kt.cpuinfer == 10 and prov.of("kt.cpuinfer").source == "profile"
    cfg, prov = load_config(p, {"KT_LAUNCH_KT__CPUINFER": "48"}, [])
    assert cfg.kt.cpuinfer == 48 and prov.of("kt.cpuinfer").where == "KT_LAUNCH_KT__CPUINFER"
    cfg, prov = load_config(p, {"KT_LAUNCH_KT__CPUINFER": "48"}, ["kt.cpuinfer=12"])
    assert cfg.kt.cpuinfer == 12 and prov.of("kt.cpuinfer").source == "cli"
    assert cfg.server.port == 30000 and prov.of("server.port") is None  # built-in default


def test_method_normalised_to_upper_case(write_profile):
    cfg, _ = load_config(write_profile(BASE), {}, [])
    assert cfg.kt.method == "AMXINT8"


def test_extends_merges_and_records_the_file(write_profile):
    base = write_profile(BASE, "base.yaml")
    child = write_profile("extends: base.yaml\nkt: {threadpool_count: 2}\n", "child.yaml")
    cfg, prov = load_config(child, {}, [])
    assert (cfg.kt.cpuinfer, cfg.kt.threadpool_count, cfg.model.path) == (10, 2, "/m")
    assert prov.of("kt.cpuinfer").where == str(base)
    assert prov.of("kt.threadpool_count").where == str(child)


def test_extends_loop_is_an_error(write_profile):
    write_profile("extends: b.yaml\nmodel: {path: /m}\n", "a.yaml")
    b = write_profile("extends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(b, {}, [])


@pytest.mark.parametrize("text,needle", [
    ("model: {path: /m}\nkt: {cpuinferr: 3}\n", "unknown key 'kt.cpuinferr'"),
    ("model: {path: /m}\nkt: {cpuinfer: many}\n", "kt.cpuinfer"),
    ("model: {path: /m}\nkt: {cpuinfer: 0}\n", "kt.cpuinfer"),
    ("kt: {cpuinfer: 3}\n", "model is required"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("model: {path: /m\n", "invalid YAML at line"),
    ("model: {path: /m}\nmoe_lora: {path: /x, sft_method: FOO}\n", "moe_lora.sft_method"),
])
def test_bad_profile_names_key_and_file(write_profile, text, needle):
    p = write_profile(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, {}, [])
    assert needle in str(e.value)
    assert str(p) in str(e.value)


def test_bad_env_and_set_name_their_source(write_profile):
    p = write_profile(BASE)
    with pytest.raises(ConfigError, match="KT_LAUNCH_KT__BOGUS: unknown key 'kt.bogus'"):
        load_config(p, {"KT_LAUNCH_KT__BOGUS": "1"}, [])
    with pytest.raises(ConfigError, match=r"--set kt.cpuinfer: Input should be a valid integer \(got .x.\)"):
        load_config(p, {}, ["kt.cpuinfer=x"])


@pytest.mark.parametrize("item", ["nokey", "=3", "kt..x=1", "kt.numa_nodes=[0,"])
def test_bad_set_syntax(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_sets([item])


def test_set_parses_json_lists_and_null(write_profile):
    cfg, _ = load_config(write_profile(BASE), {}, ["kt.numa_nodes=[0, 1]", "kt.method=null"])
    assert cfg.kt.numa_nodes == [0, 1] and cfg.kt.method is None


def test_unrelated_env_vars_are_ignored(write_profile):
    cfg, _ = load_config(write_profile(BASE), {"KT_LAUNCH_PROFILE_DIR": "/x", "HOME": "/root"}, [])
    assert cfg.kt.cpuinfer == 10


def test_missing_extends_parent_names_both_files(write_profile):
    child = write_profile("extends: nowhere.yaml\nmodel: {path: /m}\n", "child.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(child, {}, [])
    assert str(child) in str(e.value) and "nowhere.yaml" in str(e.value)


def test_huge_set_value_is_not_echoed_whole(write_profile):
    with pytest.raises(ConfigError) as e:
        load_config(write_profile(BASE), {}, ["kt.cpuinfer=" + "9x" * 100_000])
    assert "kt.cpuinfer" in str(e.value) and len(str(e.value)) < 1000
