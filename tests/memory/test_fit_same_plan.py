"""`fit` decides with the findings of the very plan `--dry-run` makes (issue 23 items 4, 5, 7): where nothing fits,
with --model-facts, and for a fleet. The class test runs profiles x recorded hosts through the real CLI and compares
fit's verdict and exit with dry-run's memory findings."""

import json

import pytest

from kt_launch.cli import main
from kt_launch.commands.fit import MEMORY_CODES

from memory.support import GiB, HOSTS, codes, dry_json, host

OWN = {"KT-E613", "KT-E620", "KT-E621", "KT-I614"}  # fit's own findings, from its rows (not a plan's)


def fit_json(capsys, profile, host_path: str, *extra: str) -> tuple[int, dict]:
    argv = ["fit", "--profile", str(profile), "--host-facts", host_path, "--json"]
    for s in extra:
        argv += ["--set", s] if "=" in s else [s]
    rc = main(argv)
    return rc, json.loads(capsys.readouterr().out)


def errors(doc: dict) -> set[str]:
    return {f["code"] for f in doc["findings"] if f["level"] == "error"}


@pytest.fixture(scope="module")
def one_4090(tmp_path_factory) -> str:
    """One 24 GB card: DeepSeek-V3's non-expert share does not fit at any TP size the host allows."""
    doc = json.loads((HOSTS / "rtx4090_8x.json").read_text())
    doc["gpus"] = doc["gpus"][:1]
    p = tmp_path_factory.mktemp("hosts") / "one_4090.json"
    p.write_text(json.dumps(doc))
    return str(p)


def test_fit_is_blocked_when_no_row_fits(models, profile, capsys, one_4090):
    """Item 4: every row said "weights + KV do not fit" and fit said OK, exit 0, while --dry-run was BLOCKED."""
    p = profile(models("DeepSeek-V3"), kt={"method": "FP8"})
    rc_dry, dry = dry_json(capsys, p, one_4090)
    assert rc_dry == 3 and "KT-E601" in errors(dry)
    rc, fit = fit_json(capsys, p, one_4090)
    assert fit["rows"] and all(r["max_gpu_experts"] is None for r in fit["rows"])
    assert rc == 3 and fit["ok"] is False and fit["verdict"].startswith("BLOCKED") and "KT-E601" in errors(fit)
    assert main(["fit", "--profile", str(p), "--host-facts", one_4090]) == 3
    assert capsys.readouterr().out.startswith("BLOCKED")


def test_model_facts_plans_check_the_ram(models, profile, capsys, tmp_path):
    """Item 5: a --model-facts plan (fit, --no-check) judges the host's RAM like the plan that read the dir."""
    assert main(["doctor", "--host-facts", host("l20_1x"), "--model", str(models("DeepSeek-V3")), "--json"]) in (0, 3)
    facts = tmp_path / "v3.json"
    facts.write_text(capsys.readouterr().out)
    here = profile(models("DeepSeek-V3"), kt={"method": "FP8"})
    rc, live = dry_json(capsys, here, "l20_1x")
    assert rc == 3 and "KT-E230" in errors(live)
    away = tmp_path / "away.yaml"
    away.write_text(json.dumps({"model": {"path": "/nowhere/DeepSeek-V3"}, "runtime": {"flavor": "sglang-kt"},
                                "kt": {"method": "FP8"}, "server": {"port": 39123}}))
    rc = main(["--profile", str(away), "--host-facts", host("l20_1x"), "--no-check", "--model-facts", str(facts),
               "--dry-run", "--json"])
    remote = json.loads(capsys.readouterr().out)
    assert rc == 3 and "KT-E230" in errors(remote)
    assert remote["memory"]["ram"]["need_bytes"] == live["memory"]["ram"]["need_bytes"]  # the headers' figure
    assert remote["memory"]["ram"]["estimated"] is False
    rc, fit = fit_json(capsys, away, host("l20_1x"), "--model-facts", str(facts))
    assert rc == 3 and "KT-E230" in errors(fit) and fit["ram"]["need_bytes"] == live["memory"]["ram"]["need_bytes"]
    # a host with the RAM for it: no RAM error either way
    big = json.loads((HOSTS / "l20_1x.json").read_text())
    big["memory"] = {"total_bytes": 2048 * GiB, "available_bytes": 2000 * GiB}
    (tmp_path / "big.json").write_text(json.dumps(big))
    rc, fit = fit_json(capsys, away, str(tmp_path / "big.json"), "--model-facts", str(facts))
    assert "KT-E230" not in codes(fit)


def test_fit_reads_the_fleet(capsys, tmp_path):
    """Item 7: a fleet's replicas each hold a copy of the CPU experts in their node's RAM; fit judges each replica
    on its share of its host, as --dry-run and check do, and sizes its rows there."""
    import sys

    from devtools import synthetic
    from kt_launch.facts.model import read_model_facts
    from kt_launch.resolve.memory import kt_pool_buffer_bytes

    from fleet.support import dual_socket, fleet_profile, write_json, write_profile

    model = synthetic.hf_model(tmp_path / "model", sparse=True)
    need = 3 * 8 * 3 * 32 * 64 * 2 + kt_pool_buffer_bytes(read_model_facts(str(model)), 8192, 1)
    doc = fleet_profile(sys.executable, 30000, model={"path": str(model)},
                        kt={"weight_path": str(model), "method": "BF16"}, fleet={"replicas": 4})
    prof = write_profile(tmp_path, doc)
    hf = write_json(tmp_path / "host.json", dual_socket(node_ram=int(need * 1.5)))  # one copy per node fits, two not
    rc_dry = main(["--profile", str(prof), "--host-facts", str(hf), "--dry-run", "--json"])
    dry = json.loads(capsys.readouterr().out)
    assert rc_dry == 3
    rc, fit = fit_json(capsys, prof, str(hf))
    assert rc == 3 and not fit["ok"]
    ram_errors = [f["message"] for f in fit["findings"] if f["code"] == "KT-E230"]
    assert len(ram_errors) == 4 and {m.split(":")[0] for m in ram_errors} == {i["name"] for i in dry["instances"]}
    assert [r["name"] for r in fit["replicas"]] == [i["name"] for i in dry["instances"]]
    assert all(r["rows"] and r["ram"]["need_bytes"] >= need for r in fit["replicas"])
    assert {r["replica"] for r in fit["rows"]} == {i["name"] for i in dry["instances"]}
    assert all(r["rows"][0]["tp_size"] == 1 for r in fit["replicas"])  # one GPU each: TP 1 only
    doc["fleet"] = {}  # one replica per node: each copy fits its node
    prof = write_profile(tmp_path, doc)
    rc, fit = fit_json(capsys, prof, str(hf))
    assert "KT-E230" not in codes(fit) and rc == 0, fit["findings"]
    assert main(["fit", "--profile", str(prof), "--host-facts", str(hf)]) == 0
    assert "fleet replica numa0" in capsys.readouterr().out


PROFILES = [("DeepSeek-V2-Lite", "BF16", ()), ("DeepSeek-V3", "FP8", ()),
            ("DeepSeek-V3", "FP8", ("server.mem_fraction_static=0.5",)),
            ("DeepSeek-V3", "FP8", ("server.tp_size=8", "kt.num_gpu_experts=200")),
            ("Qwen3-30B-A3B", "BF16", ("server.max_total_tokens=262144",)),
            ("Qwen3-30B-A3B", "AMXINT4", ("kt.weight_path=/nowhere/int4",))]


@pytest.mark.parametrize("name, method, sets", PROFILES)
def test_fit_and_dry_run_agree_on_memory(models, profile, capsys, one_4090, name, method, sets):
    """The class: for each profile on each recorded host, fit's verdict and exit are dry-run's on the memory
    findings (the same errors), with the model dir and with its --model-facts record."""
    p = profile(models(name), kt={"method": method})
    facts = p.parent / f"{name}.facts.json"
    assert main(["doctor", "--host-facts", host("l20_1x"), "--model", str(models(name)), "--json"]) in (0, 3)
    facts.write_text(capsys.readouterr().out)
    seen = set()
    for h in [host(n) for n in ("h200_1x", "l20_1x", "rtx4090_8x")] + [one_4090]:
        for extra_dry, extra_fit in (([], []), (["--no-check", "--model-facts", str(facts)],
                                                ["--model-facts", str(facts)])):
            argv = ["--profile", str(p), "--host-facts", h, "--dry-run", "--json", *extra_dry]
            for s in sets:
                argv += ["--set", s]
            rc_dry = main(argv)
            dry = json.loads(capsys.readouterr().out)
            rc, fit = fit_json(capsys, p, h, *sets, *extra_fit)
            want = errors(dry) & MEMORY_CODES
            assert errors(fit) - OWN == want, (h, extra_fit, fit["findings"])
            if not errors(fit) & OWN:
                assert rc == (3 if want else 0) and fit["ok"] is (not want), (h, extra_fit)
            if want:
                assert rc_dry == 3
            seen.add(rc)
    assert seen  # every combination ran
