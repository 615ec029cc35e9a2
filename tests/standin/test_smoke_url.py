"""`kt-launch smoke --url` against the sglang-kt stand-in: text and JSON, a good server and each bad mode, a bad
URL (exit 2) and a server that is not there (exit 4, KT-E560)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kt_launch.cli import main
from standin.support import Standin

DOC = (Path(__file__).resolve().parents[2] / "docs" / "JSON.md").read_text()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    with Standin(tmp_path_factory.mktemp("good"), args=("--served-model-name", "qwen-test")) as s:
        yield s


def smoke(capsys, *args):
    rc = main(["smoke", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_good_server_text(good, capsys):
    rc, out, err = smoke(capsys, "--url", good.url + "/v1/")
    assert rc == 0, out
    assert out.startswith("OK: 2 request(s) passed; TTFT ") and "(model qwen-test)" in out
    assert "ok   request 1 (chat, temperature 0): HTTP 200, prompt " in out and "findings: none" in out
    assert "kt-launch: smoke: request 2 (the same chat again) ..." in err


def test_good_server_json_with_the_long_prompt(good, capsys):
    rc, out, _ = smoke(capsys, "--url", good.url, "--json", "--prefill-threshold", "200", "--completion")
    doc = json.loads(out)
    assert rc == 0 and doc["schema_version"] == 1 and doc["ok"] is True and doc["model"] == "qwen-test"
    assert [r["kind"] for r in doc["requests"]] == ["completion"] * 3
    assert doc["requests"][2]["prompt_tokens"] > 200 and doc["findings"] == []
    assert all(r["completion_tokens"] == 48 and r["ttft_s"] is not None for r in doc["requests"])
    section = DOC.split("## `kt-launch smoke --json`", 1)[1].split("\n## ", 1)[0]
    assert set(doc) == set(re.findall(r"^\| `(\w+)` \|", section, re.M))  # docs/JSON.md documents every field


@pytest.mark.parametrize("mode,code,failed", [("gibberish", "KT-E562", 3), ("zero", "KT-E561", 3),
                                               ("crash2", "KT-E560", 2)])
def test_bad_server_exit_4_with_the_finding(tmp_path, capsys, mode, code, failed):
    with Standin(tmp_path, mode=mode) as s:
        rc, out, _ = smoke(capsys, "--url", s.url, "--json", "--prefill-threshold", "100")
    doc = json.loads(out)
    assert rc == 4 and doc["ok"] is False
    assert {f["code"] for f in doc["findings"]} == {code}
    assert sum(not r["ok"] for r in doc["requests"]) == failed  # crash2: request 2 failed, request 3 not sent
    assert len(doc["findings"]) == (1 if mode == "crash2" else 3)
    if mode == "crash2":
        assert doc["requests"][1]["problem"].startswith("the server closed the connection")
        assert doc["requests"][2]["problem"] == "not sent"
        assert doc["findings"][0]["fields"]["request"] == "request 2 (the same chat again)"


def test_text_output_of_a_failure(tmp_path, capsys):
    with Standin(tmp_path, mode="gibberish", env={"STANDIN_GIBBERISH": "bang"}) as s:
        rc, out, _ = smoke(capsys, "--url", s.url)
    assert rc == 4 and out.startswith("FAILED: 2 of 2 request(s)")
    assert "FAIL request 1" in out and "ERROR   KT-E562" in out and "'!' x 48" in out


def test_nothing_listening_is_exit_4(tmp_path, capsys):
    with Standin(tmp_path) as s:
        url = s.url
    rc, out, _ = smoke(capsys, "--url", url, "--timeout", "5", "--json")
    doc = json.loads(out)
    assert rc == 4 and doc["findings"][0]["code"] == "KT-E560" and "cannot connect" in doc["requests"][0]["problem"]


@pytest.mark.parametrize("url", ["localhost:30000", "https://x:1", "http://x:1/v2/chat", "http://x:99999",
                                 "http://u:p@x:1", "--json"])
def test_bad_url_is_exit_2_naming_it(capsys, url):
    rc, _, err = smoke(capsys, "--url", url)
    assert rc == 2 and "--url" in err


def test_api_key_from_an_environment_variable(tmp_path, capsys, monkeypatch):
    with Standin(tmp_path, args=("--api-key", "sk-test-123456")) as s:
        rc, out, _ = smoke(capsys, "--url", s.url, "--json")
        assert rc == 4 and "HTTP 401" in json.loads(out)["requests"][0]["problem"]
        monkeypatch.setenv("MY_KEY", "sk-test-123456")
        rc, out, _ = smoke(capsys, "--url", s.url, "--json", "--api-key-env", "MY_KEY")
        assert rc == 0 and "sk-test-123456" not in out
    rc, _, err = smoke(capsys, "--url", s.url, "--api-key-env", "NO_SUCH_VAR_X")
    assert rc == 2 and "NO_SUCH_VAR_X" in err
