"""`kt-launch bench` against the sglang-kt stand-in: rows at the tutorials' input lengths with prompt lengths
counted by the server's /tokenize, the setup from /server_info (--url) or the profile's plan (--profile), the
published figure beside a matching model and GPU class, text and JSON; a failing server is exit 4 (KT-E570)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from kt_launch.cli import main
from standin.support import Standin

DOC = (Path(__file__).resolve().parents[2] / "docs" / "JSON.md").read_text()
ARGS = ("--served-model-name", "Qwen3-Coder-Next-FP8", "--kt-method", "FP8", "--kt-num-gpu-experts", "100",
        "--kt-cpuinfer", "96", "--kt-threadpool-count", "2", "--context-length", "40000")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Standin(tmp_path_factory.mktemp("bench"), args=ARGS) as s:
        yield s


def bench(capsys, *args):
    rc = main(["bench", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_url_text_rows_setup_and_progress(server, capsys):
    rc, out, err = bench(capsys, "--url", server.url, "--lengths", "2k,8k,32k", "--output-tokens", "16")
    assert rc == 0, out + err
    assert out.startswith(f"OK: kt-launch bench of {server.url}, 1 request(s) at a time")
    flat = " ".join(out.split())
    assert "model Qwen3-Coder-Next-FP8, method FP8, GPU experts/layer 100, cpuinfer 96, pools 2, TP 1" in flat
    assert "SGLang 0.7.2" in flat and "prompt tokens counted by: tokenize" in out
    assert re.search(r"^\s+2k\s+2048\s", out, re.M) and re.search(r"^\s+32k\s+32768\s", out, re.M)
    assert "kt-launch: bench: 8192 input tokens (2 of 3), 1 request(s) at a time ..." in err


def test_profile_json_with_published_figures_and_concurrency(server, tmp_path, capsys):
    host = {"cpu": {"model": "AMD EPYC 9355", "physical_cores": 64, "logical_cpus": 128,
                    "usable_cpus": list(range(128)), "flags": ["avx2", "avx512f", "avx512bw", "avx512_bf16"]},
            "numa": [{"id": 0, "cpus": list(range(64)), "memory_bytes": 256 << 30},
                     {"id": 1, "cpus": list(range(64, 128)), "memory_bytes": 256 << 30}],
            "memory": {"total_bytes": 512 << 30, "available_bytes": 500 << 30},
            "gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 5090", "memory_bytes": 32 << 30}]}
    (tmp_path / "host.json").write_text(json.dumps(host))
    prof = {"model": {"path": "/nonexistent/Qwen3-Coder-Next-FP8", "served_name": "Qwen3-Coder-Next-FP8"},
            "kt": {"weight_path": "/nonexistent/w", "method": "FP8", "num_gpu_experts": 100, "cpuinfer": 96},
            "server": {"host": "127.0.0.1", "port": server.port}, "runtime": {"flavor": "sglang-kt"}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(prof))
    rc, out, err = bench(capsys, "--profile", str(tmp_path / "p.yaml"), "--host-facts", str(tmp_path / "host.json"),
                         "--lengths", "2k,8k", "--concurrency", "2", "--output-tokens", "8", "--json")
    doc = json.loads(out)
    assert rc == 0, err
    assert doc["schema_version"] == 1 and doc["ok"] and doc["concurrency"] == 2 and doc["output_tokens"] == 8
    setup = doc["setup"]
    assert setup["gpus"] == ["NVIDIA GeForce RTX 5090"] and setup["cpu_model"] == "AMD EPYC 9355"
    assert (setup["method"], setup["gpu_experts_per_layer"], setup["cpuinfer"]) == ("FP8", 100, 96)
    assert setup["pools"] == 2 and setup["tp_size"] == 1  # from the plan: two NUMA nodes
    assert doc["published"]["source"].endswith("Qwen3-Coder-Next-Tutorial.md")
    r2k, r8k = doc["rows"]
    assert (r2k["published_prefill_tok_s"], r2k["published_decode_tok_s"]) == (1746, 75.6)
    assert (r8k["published_prefill_tok_s"], r8k["published_decode_tok_s"]) == (2407, 69.1)
    assert r2k["requests"] == 2 and r2k["prompt_tokens"] == 2048 and r2k["total_decode_tok_s"] > 0
    section = DOC.split("## `kt-launch bench --json`", 1)[1].split("\n## ", 1)[0]
    assert set(doc) == set(re.findall(r"^\| `(\w+)` \|", section, re.M))  # docs/JSON.md documents every field


def test_a_length_past_the_context_is_skipped_with_a_warning(server, capsys):
    rc, out, _ = bench(capsys, "--url", server.url, "--lengths", "1k,64k", "--output-tokens", "4", "--json")
    doc = json.loads(out)
    assert rc == 0 and [r["input_tokens"] for r in doc["rows"]] == [1024]
    assert [f["code"] for f in doc["findings"]] == ["KT-W570"]


def test_a_gibberish_server_is_exit_4(tmp_path, capsys):
    with Standin(tmp_path, mode="gibberish") as s:
        rc, out, _ = bench(capsys, "--url", s.url, "--lengths", "1k,2k", "--output-tokens", "16")
    assert rc == 4 and out.startswith("FAILED") and "KT-E570" in out and "one character repeated" in out


@pytest.mark.parametrize("args,what", [([], "--url URL or --profile P"),
                                       (["--url", "http://x:1", "--profile", "p"], "--url URL or --profile P"),
                                       (["--url", "http://x:1", "--lengths", "2k,lots"], "--lengths"),
                                       (["--url", "http://x:1", "--set", "kt.cpuinfer=4"], "need --profile"),
                                       (["--url", "ftp://x:1"], "--url")])
def test_bad_arguments_are_exit_2(capsys, args, what):
    rc, _, err = bench(capsys, *args)
    assert rc == 2 and what in err


def _start_profile(d: Path) -> Path:
    from devtools import synthetic
    from operate.support import free_port, write_host, write_profile
    from standin.support import make_standin

    synthetic.hf_model(d / "model")
    write_host(d)
    return write_profile(d, {"model": {"path": str(d / "model"), "served_name": "tiny"},
                             "kt": {"weight_path": "/nonexistent/kt", "method": "AMXINT8", "num_gpu_experts": 3},
                             "server": {"host": "127.0.0.1", "port": free_port()},
                             "runtime": {"python": str(make_standin(d)), "flavor": "sglang-kt"}})


def test_start_serves_the_profile_benches_it_once_ready_and_stops_it(tmp_path, launches):
    """--start: the profile's server started supervised (its smoke test passes first), the rows once it is ready,
    then the server stopped; stdout holds the JSON alone (the server's output goes to stderr), and the flags after
    `--` reach the server."""
    from operate.support import Launch, pid_gone

    profile = _start_profile(tmp_path)
    launch = Launch(tmp_path, ["bench", "--profile", str(profile), "--host-facts", str(tmp_path / "host.json"),
                               "--no-check", "--start", "--lengths", "64,128", "--output-tokens", "8", "--json",
                               "--", "--context-length", "4096"],
                    {"STANDIN_DIR": str(tmp_path), "STANDIN_READY_AFTER": "0",
                     "KT_LAUNCH_CACHE_DIR": str(tmp_path / "cache")})
    launches.append(launch)
    assert launch.finish(timeout=120) == 0, launch.err
    doc = json.loads(launch.out)  # stdout is the bench's alone: the server's output went to stderr
    assert doc["ok"] and [r["input_tokens"] for r in doc["rows"]] == [64, 128]
    assert doc["setup"]["method"] == "AMXINT8" and doc["setup"]["model"] == "tiny"
    assert "smoke test" in launch.err  # supervised as a launch is: the smoke test ran before the bench
    assert pid_gone(int((tmp_path / "pid").read_text())), "the server was left running"
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--context-length") + 1] == "4096"


def test_start_with_plan_errors_starts_nothing(tmp_path, capsys):
    """Without --no-check the weight path that does not exist is a plan error: exit 3, and no server ran. (The
    interpreter is this one, without SGLang: the stand-in, asked for SGLang's parser, would serve instead.)"""
    profile = _start_profile(tmp_path)
    rc, out, err = bench(capsys, "--profile", str(profile), "--host-facts", str(tmp_path / "host.json"), "--start",
                         "--set", f"runtime.python={sys.executable}", "--lengths", "64")
    assert rc == 3 and "nothing was started" in err, err
    assert not (tmp_path / "pid").exists() and not (tmp_path / "argv.json").exists()


@pytest.mark.parametrize("args,what", [(["--url", "http://x:1", "--start"], "need --profile"),
                                       (["--profile", "p", "--no-check"], "go with --start"),
                                       (["--url", "http://x:1", "--", "--port", "1"], "give --start")])
def test_start_arguments_out_of_place_are_exit_2(capsys, args, what):
    rc, _, err = bench(capsys, *args)
    assert rc == 2 and what in err, err
