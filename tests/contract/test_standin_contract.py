"""The sglang-kt stand-in (tests/standin/sglang_kt.py) stays honest: every route it serves exists in the real
sglang-kt 0.7.2 http_server.py, and what it answers validates against the real protocol.py models (chat and
completion, stream chunks and whole responses, /v1/models, /tokenize)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from standin.support import Standin

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "standin" / "sglang_kt.py"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: dict, stream: bool = False):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        raw = r.read().decode()
    if not stream:
        return json.loads(raw)
    events = [line[len("data: "):] for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _routes() -> list[list[str]]:
    """The stand-in's ROUTES table, read from its source without running it as a server."""
    import ast

    tree = ast.parse(SOURCE.read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            consts[node.targets[0].id] = node
    ns: dict = {}
    exec(compile(ast.Module([consts["RECORDER_ROUTES"], consts["ROUTES"]], type_ignores=[]), str(SOURCE), "exec"),
         ns)
    return [list(r) for r in ns["ROUTES"]]


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    with Standin(tmp_path_factory.mktemp("standin")) as s:
        chat = {"model": "default", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0, "max_tokens": 12}
        comp = {"model": "default", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 12}
        usage = {"stream": True, "stream_options": {"include_usage": True}}
        bodies = [["ChatCompletionRequest", chat], ["CompletionRequest", comp],
                  ["ChatCompletionResponse", _post(s.url + "/v1/chat/completions", chat)],
                  ["CompletionResponse", _post(s.url + "/v1/completions", comp)],
                  ["ModelList", _get(s.url + "/v1/models")],
                  ["TokenizeResponse", _post(s.url + "/tokenize", {"prompt": "one two three"})]]
        # what kt-launch itself sends (smoke: chat and completion; bench: completion with ignore_eos)
        from kt_launch.resolve.smoke import smoke_requests
        from kt_launch.run.smoke import body_of

        for req in smoke_requests(True, 100) + smoke_requests(False, None):
            path, body = body_of(req, "default")
            bodies.append(["ChatCompletionRequest" if path.endswith("chat/completions") else "CompletionRequest",
                           body])
        bodies.append(["CompletionRequest", body_of(smoke_requests(False, None)[0], "m", {"ignore_eos": True})[1]])
        chunks = _post(s.url + "/v1/chat/completions", {**chat, **usage}, stream=True)
        bodies += [["ChatCompletionStreamResponse", c] for c in chunks]
        cchunks = _post(s.url + "/v1/completions", {**comp, **usage}, stream=True)
        bodies += [["CompletionStreamResponse", c] for c in cchunks]
        return bodies, chunks, cchunks


def test_standin_routes_and_bodies_match_the_real_sglang_kt(real_venvs, answers):
    bodies, chunks, cchunks = answers
    assert chunks[-1]["usage"]["completion_tokens"] == 12 and chunks[-1]["choices"] == []
    assert cchunks[-1]["usage"]["completion_tokens"] == 12
    proc = subprocess.run([real_venvs["sglang-kt"], str(HERE / "standin_check.py")],
                          input=json.dumps({"routes": _routes(), "bodies": bodies}), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["real_routes"] > 50  # the real app's table was read
    assert got["missing_routes"] == []
    assert got["invalid"] == []
    assert len(bodies) > 25
