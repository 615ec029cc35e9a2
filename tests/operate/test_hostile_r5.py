"""Red team 5 (this round's new surfaces): `smoke --url`, `bench --url/--lengths` with hostile values, through the real
CLI in-process. Each is exit 2 naming the option, never a traceback, a silent default or a secret in the output.
(Hostile servers: tests/standin/test_http_client.py; hostile prompts files: tests/operate/test_calibrate.py.)"""

from __future__ import annotations

import pytest

from kt_launch.cli import main

SECRET = "s3cr3t-pw"
BAD_URLS = {
    "no scheme": "localhost:30000",
    "file://": "file:///etc/passwd",
    "a unix path": "/tmp/sglang.sock",
    "a flag": "--json",
    "port out of range": "http://127.0.0.1:99999",
    "port 0": "http://127.0.0.1:0",
    "broken IPv6": "http://[::1",
    "a user and password": f"http://admin:{SECRET}@127.0.0.1:30000",
    "a password and a bad port": f"http://admin:{SECRET}@127.0.0.1:99999",
    "a password, broken IPv6": f"http://admin:{SECRET}@[::1",
    "a 70000-letter host": "http://" + "a" * 70_000 + ":30000",
    "a path": "http://127.0.0.1:30000/generate",
}


def _run(args, capsys) -> tuple[int, str]:
    rc = main(args)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]
    return rc, text


@pytest.mark.parametrize("command", ["smoke", "bench"])
@pytest.mark.parametrize("label", sorted(BAD_URLS))
def test_a_bad_url_is_exit_2_naming_url_and_never_prints_a_password(label, command, capsys):
    rc, text = _run([command, "--url", BAD_URLS[label], "--timeout", "1"], capsys)
    assert rc == 2 and "--url" in text, text
    assert SECRET not in text, text
    assert len(text) < 2000, len(text)  # a huge value is cut short in the message


@pytest.mark.parametrize("value, why", [
    ("0", "outside 16 .. 2M"), ("-5", "not a token count"), ("9" * 5000, "not a token count"),
    ("abc", "not a token count"), ("1e3", "not a token count"), ("\u0661\u0666", "not a token count"),
    ("16,16", "given twice"), ("2k,2048", "given twice"), (",", "not a token count"), ("--json", "not a token count"),
    (",".join(str(16 + i) for i in range(40)), "at most 16"),
])
def test_bad_bench_lengths_are_exit_2_before_any_request(value, why, capsys):
    rc, text = _run(["bench", "--url", "http://127.0.0.1:9", f"--lengths={value}"], capsys)
    assert rc == 2 and "--lengths" in text and why in text, text


@pytest.mark.parametrize("value", ["0", "-1", "nan", "--json"])
def test_calibrate_request_timeout_0_is_refused_not_an_instant_deadline(value, capsys):
    rc, text = _run(["calibrate", "--profile", "/nonexistent/p.yaml", f"--request-timeout={value}"], capsys)
    assert rc == 2 and "--request-timeout" in text, text


@pytest.mark.parametrize("placement", ["frequency", "auto"])
def test_a_nul_byte_in_kt_expert_stats_is_a_plan_error_not_a_crash(tmp_path, monkeypatch, capsys, placement):
    from devtools import synthetic
    from operate.support import write_host, write_profile

    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    prof = write_profile(tmp_path, {"model": {"path": str(tmp_path / "model")},
                                    "kt": {"weight_path": str(tmp_path / "model"), "method": "BF16",
                                           "num_gpu_experts": 3, "expert_placement": placement,
                                           "expert_stats": "counts\0.pt"},
                                    "runtime": {"python": "/nonexistent/python", "flavor": "sglang-kt"}})
    rc, text = _run(["--profile", str(prof), "--host-facts", str(tmp_path / "host.json"), "--dry-run"], capsys)
    assert rc == 3 and "KT-E304" in text and "kt.expert_stats" in text, text


@pytest.mark.parametrize("cache", ["a file", "a file where its calibrations folder goes"])
def test_calibrate_with_an_unusable_cache_stops_before_starting_anything(tmp_path, monkeypatch, capsys, cache):
    """The calibration cache is checked before the server starts (not after its workload ran): exit 2 naming it."""
    from devtools import synthetic
    from operate.support import write_host, write_profile

    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    bad = tmp_path / "cache"
    if cache == "a file":
        bad.write_text("not a folder")
    else:
        bad.mkdir()
        (bad / "calibrations").write_text("not a folder")
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(bad))
    prof = write_profile(tmp_path, {"model": {"path": str(tmp_path / "model")},
                                    "kt": {"weight_path": str(tmp_path / "model"), "method": "BF16",
                                           "num_gpu_experts": 3},
                                    "runtime": {"python": "/nonexistent/python", "flavor": "sglang-kt"}})
    rc, text = _run(["calibrate", "--profile", str(prof), "--host-facts", str(tmp_path / "host.json"), "--no-check"],
                    capsys)
    assert rc == 2 and "calibration" in text and str(bad) in text and "KT_LAUNCH_CACHE_DIR" in text, text
    assert "starting" not in text, text


@pytest.mark.parametrize("python", ["--json", "/nonexistent/python", "."])
def test_calibrate_python_that_cannot_run_is_refused_before_the_start(tmp_path, monkeypatch, capsys, python):
    from devtools import synthetic
    from operate.support import write_host, write_profile

    synthetic.hf_model(tmp_path / "model")
    write_host(tmp_path)
    monkeypatch.setenv("KT_LAUNCH_CACHE_DIR", str(tmp_path / "cache"))
    prof = write_profile(tmp_path, {"model": {"path": str(tmp_path / "model")},
                                    "kt": {"weight_path": str(tmp_path / "model"), "method": "BF16",
                                           "num_gpu_experts": 3},
                                    "runtime": {"python": "/nonexistent/python", "flavor": "sglang-kt"}})
    rc, text = _run(["calibrate", "--profile", str(prof), "--host-facts", str(tmp_path / "host.json"), "--no-check",
                     f"--python={python}"], capsys)
    assert rc == 2 and "--python" in text and "starting" not in text, text
