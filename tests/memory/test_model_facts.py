"""Model facts travel (issue 17 item 11): `doctor --model DIR --json` records config.json and the checkpoint bytes by
role; `--model-facts FILE` plans from them with --no-check where the model is not; without them a --host-facts plan
that has GPUs warns (KT-W616) that its GPUs get no experts, and KT-I605 stays for a host with no GPU."""

import json
import shutil

import pytest

from kt_launch.cli import main

from memory.support import codes, host


def record(capsys, model_dir, tmp_path, name="model.json") -> str:
    rc = main(["doctor", "--host-facts", host("l20_1x"), "--model", str(model_dir), "--json"])
    out = capsys.readouterr().out
    assert rc in (0, 3)
    p = tmp_path / name
    p.write_text(out)
    return str(p)


def plan(capsys, profile_path, *extra) -> tuple[int, dict]:
    rc = main(["--profile", str(profile_path), "--dry-run", "--json", *extra])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name, method", [("DeepSeek-V3", "FP8"), ("Qwen3-30B-A3B", "BF16"),
                                          ("Kimi-K2.5", "RAWINT4")])
def test_a_recorded_model_plans_elsewhere_exactly_as_at_home(models, profile, capsys, tmp_path, name, method):
    """The plan from the record with --no-check (the model dir gone) equals the plan that read the dir itself."""
    here = profile(models(name), kt={"method": method})
    rc0, live = plan(capsys, here, "--host-facts", host("l20_1x"))
    facts = record(capsys, models(name), tmp_path)
    doc = json.loads(open(facts).read())
    assert doc["model_facts"]["config"]["architectures"] and doc["model_facts"]["weights"]["expert_by_layer"]
    away = tmp_path / "elsewhere.yaml"
    away.write_text(json.dumps({"model": {"path": "/nowhere/" + name}, "runtime": {"flavor": "sglang-kt"},
                                "kt": {"method": method}, "server": {"port": 39123}}))
    rc1, remote = plan(capsys, away, "--host-facts", host("l20_1x"), "--no-check", "--model-facts", facts)
    assert remote["resolved"]["kt.num_gpu_experts"] == live["resolved"]["kt.num_gpu_experts"]
    assert live["resolved"]["kt.num_gpu_experts"]["source"] == "derived"
    keep = ("total_bytes", "weights_bytes", "gpu_experts_bytes", "kv_bytes_per_token", "kv_tokens", "free_bytes")
    assert [{k: g[k] for k in keep} for g in remote["memory"]["gpus"]] == \
        [{k: g[k] for k in keep} for g in live["memory"]["gpus"]]
    assert remote["memory"]["checkpoint"]["expert_bytes"] == live["memory"]["checkpoint"]["expert_bytes"]
    assert "KT-W616" not in codes(remote) and "KT-I605" not in codes(remote)
    # fit takes it too, reading nothing of model.path
    rc = main(["fit", "--profile", str(away), "--host-facts", host("l20_1x"), "--model-facts", facts, "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rc in (0, 3) and rows and any(r["max_gpu_experts"] is not None for r in rows)


def test_without_model_facts_a_host_with_gpus_warns(models, profile, capsys, tmp_path):
    away = tmp_path / "elsewhere.yaml"
    away.write_text(json.dumps({"model": {"path": "/nowhere/m"}, "runtime": {"flavor": "sglang-kt"},
                                "kt": {"method": "AMXINT4"}, "server": {"port": 39123}}))
    rc, doc = plan(capsys, away, "--host-facts", host("l20_1x"), "--no-check")
    w = [f for f in doc["findings"] if f["code"] == "KT-W616"]
    assert w and w[0]["level"] == "warning" and "--model-facts" in w[0]["fix"] and "KT-I605" not in codes(doc)
    assert doc["resolved"]["kt.num_gpu_experts"]["value"] == 0
    # a record without weights (no safetensors shard) still warns: the GPUs cannot be sized
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(models("Qwen3-30B-A3B") / "config.json", bare / "config.json")
    facts = record(capsys, bare, tmp_path, "bare.json")
    assert json.loads(open(facts).read())["model_facts"]["weights"] is None
    rc, doc = plan(capsys, away, "--host-facts", host("l20_1x"), "--no-check", "--model-facts", facts)
    assert "KT-W616" in codes(doc)
    # no GPU in the recorded host: nothing to place there, so KT-I605 (info) as before
    hf = json.loads(open(host("l20_1x")).read())
    hf["gpus"] = []
    nogpu = tmp_path / "nogpu.json"
    nogpu.write_text(json.dumps(hf))
    rc, doc = plan(capsys, away, "--host-facts", str(nogpu), "--no-check")
    assert "KT-I605" in codes(doc) and "KT-W616" not in codes(doc)


def _corrupt(tmp_path, facts: str, edit) -> str:
    doc = json.loads(open(facts).read())
    edit(doc["model_facts"])
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    return str(p)


@pytest.mark.parametrize("edit, why", [
    (lambda m: m["weights"]["expert_by_layer"].update({"3": -1}), "expert_by_layer.3"),
    (lambda m: m["weights"].update(sharded_bytes=1.5), "sharded_bytes"),
    (lambda m: m["weights"].update(replicated_bytes=True), "replicated_bytes"),
    (lambda m: m["weights"]["expert_by_layer"].update({"x": 1}), "expert_by_layer"),
    (lambda m: m["config"].update(num_experts_per_tok=0), "num_experts_per_tok"),
    (lambda m: m["config"].pop("hidden_size"), "hidden_size"),
    (lambda m: m.update(config=[]), "config"),
])
def test_a_bad_record_is_exit_2_naming_the_field(models, profile, capsys, tmp_path, edit, why):
    facts = record(capsys, models("Qwen3-30B-A3B"), tmp_path)
    bad = _corrupt(tmp_path, facts, edit)
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"})
    rc = main(["--profile", str(p), "--host-facts", host("l20_1x"), "--no-check", "--model-facts", bad, "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2 and "--model-facts" in err and why in err and "Traceback" not in err


def test_missing_unbounded_and_host_only_files_are_refused(models, profile, capsys, tmp_path):
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"})
    for path, why in ((tmp_path / "none.json", "doctor --model"), (host("l20_1x"), "model_facts")):
        rc = main(["--profile", str(p), "--no-check", "--model-facts", str(path), "--dry-run"])
        err = capsys.readouterr().err
        assert rc == 2 and why in err, err
    big = tmp_path / "big.json"
    big.write_text('{"model_facts": {"config": {"x": "' + "a" * (9 << 20) + '"}}}')
    rc = main(["--profile", str(p), "--no-check", "--model-facts", str(big), "--dry-run"])
    assert rc == 2 and "--model-facts" in capsys.readouterr().err


def test_doctor_model_of_a_dir_without_config_is_exit_2(capsys, tmp_path):
    rc = main(["doctor", "--host-facts", host("l20_1x"), "--model", str(tmp_path), "--json"])
    cap = capsys.readouterr()
    assert rc == 2 and "config.json" in cap.err and cap.out == ""


@pytest.mark.parametrize("version", [99, 0, True, "1", 1.0])
def test_a_record_of_another_schema_version_is_refused(models, profile, capsys, tmp_path, version):
    """A record of a newer kt-launch was read as version 1 (issue 23): refused, exit 2, naming the file and field."""
    facts = record(capsys, models("Qwen3-30B-A3B"), tmp_path)
    doc = json.loads(open(facts).read())
    assert doc["schema_version"] == 1
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"})
    for where in ("top", "model_facts"):
        d = json.loads(json.dumps(doc))
        (d if where == "top" else d["model_facts"])["schema_version"] = version
        bad = tmp_path / f"v-{where}.json"
        bad.write_text(json.dumps(d))
        for argv in (["--dry-run", "--no-check"], ["fit"]):
            cmd = argv[:1] if argv[0] == "fit" else []
            rest = argv[1:] if argv[0] == "fit" else argv
            rc = main([*cmd, "--profile", str(p), "--host-facts", host("l20_1x"), *rest, "--model-facts", str(bad)])
            err = capsys.readouterr().err
            assert rc == 2 and str(bad) in err and "schema_version" in err and "Traceback" not in err, err
