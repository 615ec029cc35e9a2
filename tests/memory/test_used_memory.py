"""GPU memory other processes hold (issue 17 item 10, "free GPU memory"): nvidia-smi memory.used goes into the host
facts, `--host-facts` files may carry it (validated), and the plan sizes SGLang's pool against what is free."""

import json
import os
import stat

import pytest

from kt_launch.cli import main
from kt_launch.facts.host import gather_host, load_host_facts, parse_used

from memory.support import GiB, codes, dry_json, host

MiB = 1 << 20


def _with_used(tmp_path, name: str, used: int | float | str, index: int = 0) -> str:
    doc = json.loads(open(host(name)).read())
    doc["gpus"][index]["used_bytes"] = used
    p = tmp_path / f"{name}-used.json"
    p.write_text(json.dumps(doc))
    return str(p)


def test_used_memory_shrinks_kv_by_exactly_that_much_of_the_pool(models, profile, capsys, tmp_path):
    """SGLang's pool is mem_fraction_static x the memory free at start-up (model_runner.py:402, 907-932), so 8 GiB
    held by another process costs the KV pool mf x 8 GiB, and the plan says so (KT-W615)."""
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"}, server={"mem_fraction_static": 0.9},
                fit={"kv_tokens": 8192})
    rc0, base = dry_json(capsys, p, "l20_1x", "kt.num_gpu_experts=4")
    rc1, busy = dry_json(capsys, p, _with_used(tmp_path, "l20_1x", 8 * GiB), "kt.num_gpu_experts=4")
    g0, g1 = base["memory"]["gpus"][0], busy["memory"]["gpus"][0]
    assert g0["used_bytes"] == 0 and g1["used_bytes"] == 8 * GiB
    lost = (g0["kv_tokens"] - g1["kv_tokens"]) * g0["kv_bytes_per_token"]
    assert abs(lost - 0.9 * 8 * GiB) <= g0["kv_bytes_per_token"] + 2
    assert g1["reserve_bytes"] - g0["reserve_bytes"] == pytest.approx(0.9 * 8 * GiB, abs=2)
    assert "KT-W615" in codes(busy) and "KT-W615" not in codes(base)
    main(["--profile", str(p), "--host-facts", _with_used(tmp_path, "l20_1x", 8 * GiB), "--dry-run",
          "--set", "kt.num_gpu_experts=4"])
    assert "gpu 0: 8.0 GiB held by other processes" in capsys.readouterr().out
    w = next(f for f in busy["findings"] if f["code"] == "KT-W615")
    assert "GPU 0" in w["message"] and "8.0 GiB" in w["message"]
    # the derived count shrinks too: fewer GPU experts fit next to 8 GiB of someone else's memory
    rc0, base = dry_json(capsys, p, "l20_1x")
    rc1, busy = dry_json(capsys, p, _with_used(tmp_path, "l20_1x", 8 * GiB))
    assert busy["resolved"]["kt.num_gpu_experts"]["value"] < base["resolved"]["kt.num_gpu_experts"]["value"]


def test_fit_carries_the_used_memory_warning(models, profile, capsys, tmp_path):
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"})
    rc = main(["fit", "--profile", str(p), "--host-facts", _with_used(tmp_path, "l20_1x", 20 * GiB), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and "KT-W615" in codes(doc)
    free_rows = {(r["tp_size"], r["kv_tokens"]): r["max_gpu_experts"] for r in doc["rows"]}
    main(["fit", "--profile", str(p), "--host-facts", host("l20_1x"), "--json"])
    all_rows = {(r["tp_size"], r["kv_tokens"]): r["max_gpu_experts"] for r in json.loads(capsys.readouterr().out)["rows"]}
    assert all((free_rows[k] or 0) < all_rows[k] for k in all_rows if all_rows[k])


def test_a_little_driver_memory_is_counted_without_a_warning(models, profile, capsys, tmp_path):
    p = profile(models("Qwen3-30B-A3B"), kt={"method": "BF16"})
    rc, doc = dry_json(capsys, p, _with_used(tmp_path, "l20_1x", 300 * MiB))
    assert doc["memory"]["gpus"][0]["used_bytes"] == 300 * MiB and "KT-W615" not in codes(doc)


@pytest.mark.parametrize("used, why", [(-1, "greater than or equal to 0"), (1.5, "integer"), ("1", "integer"),
                                       (True, "integer"), (1 << 62, "less than or equal"),
                                       (46068 * MiB + 1, "more than gpus[0].memory_bytes")])
def test_host_facts_used_bytes_is_validated(tmp_path, used, why):
    with pytest.raises(ValueError) as e:
        load_host_facts(_with_used(tmp_path, "l20_1x", used))
    assert "gpus" in str(e.value) and why in str(e.value)


def test_host_facts_without_used_bytes_read_as_zero_and_round_trip(tmp_path):
    h = load_host_facts(host("l20_1x"))
    assert h.gpus[0].used_bytes == 0
    h2 = load_host_facts(_with_used(tmp_path, "l20_1x", 5 * GiB))
    assert h2.gpus[0].used_bytes == 5 * GiB and h2.to_json()["gpus"][0]["used_bytes"] == 5 * GiB


def test_parse_used_rejects_what_is_no_size():
    sizes = {0: 24 * GiB, 1: 24 * GiB}
    assert parse_used("0, 1024\n1, 0\n", sizes) == ({0: GiB, 1: 0}, None)
    for bad in ("0, nan", "0, [N/A]", "0, -5", "0, 99999999", "7, 10", "0, 1\n0, 2", "x, 1"):
        used, why = parse_used(bad, sizes)
        assert why is not None and all(v <= 24 * GiB for v in used.values()), bad


def _fake_smi(tmp_path, used_out: str):
    """A real nvidia-smi stand-in (an executable) that answers the two queries kt-launch makes."""
    b = tmp_path / "bin"
    b.mkdir(parents=True)
    smi = b / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in\n"
                   "  *memory.used*) printf '%s\\n' \"" + used_out + "\";;\n"
                   "  *) echo '0, NVIDIA L20, 46068, GPU-aaaa, 00000000:17:00.0';;\nesac\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{b}:{os.environ.get('PATH', '')}", "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache"),
            "HOME": str(tmp_path)}


def test_gather_reads_memory_used_live_and_doctor_json_writes_it(tmp_path, capsys, monkeypatch):
    env = _fake_smi(tmp_path, "0, 2048")
    h = gather_host(env)
    assert [(g.name, g.used_bytes) for g in h.gpus] == [("NVIDIA L20", 2048 * MiB)]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    main(["doctor", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpus"][0]["used_bytes"] == 2048 * MiB
    # a bad memory.used line is a note and 0, never a crash
    env2 = _fake_smi(tmp_path / "b", "0, [N/A]")
    h = gather_host(env2)
    assert h.gpus[0].used_bytes == 0 and any("memory.used" in n for n in h.notes)
