"""The stand-in itself: its recorder writes real .pt files (torch in the backend venv) of the shape sglang-kt's
stat recorder writes, skewed, growing with the requests served; its bad modes misbehave as documented."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from standin.support import Standin, backend_python, make_standin, wait_until

LAYERS, EXPERTS = 3, 16

LOAD = """
import glob, json, sys, torch
out = []
for path in sorted(glob.glob(sys.argv[1] + '/*/*.pt')):
    d = torch.load(path, weights_only=True)
    c = d['logical_count']
    per = c.sum(0)
    out.append({'keys': sorted(d), 'shape': list(c.shape), 'dtype': str(c.dtype), 'total': int(c.sum()),
                'min': int(c.min()), 'top': [int(per[l].max()) for l in range(per.shape[0])],
                'mean': [float(per[l].float().mean()) for l in range(per.shape[0])],
                'hot': [int(per[l].argmax()) for l in range(per.shape[0])]})
print(json.dumps(out))
"""


def chat(url: str, text: str = "What is the capital of France?", max_tokens: int = 8) -> dict:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": max_tokens}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def post(url: str, path: str) -> int:
    with urllib.request.urlopen(urllib.request.Request(url + path, data=b""), timeout=60) as r:
        return r.status


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "deepseek_v2", "num_hidden_layers": LAYERS,
                                               "n_routed_experts": EXPERTS, "num_experts_per_tok": 4,
                                               "first_k_dense_replace": 1}))
    return d


def test_recorder_writes_skewed_counts_of_the_model_shape_that_grow(tmp_path, model_dir):
    py = backend_python()
    if py is None:
        pytest.skip("the backend venv (torch) is not built: tests/backend/setup_env.sh")
    out = tmp_path / "dumps" / "rec"
    env = {"SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR": str(out)}
    args = ("--model-path", str(model_dir), "--expert-distribution-recorder-mode", "stat",
            "--expert-distribution-recorder-buffer-size", "8")
    wrong_env = {"SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR": str(tmp_path / "dumps" / "wrong")}
    with Standin(tmp_path / "a", args=args, env=env, python=py) as s, \
            Standin(tmp_path / "b", args=(*args, "--recorder-shape-wrong"), env=wrong_env, python=py) as w:
        chat(s.url)  # before the start: not counted
        assert post(s.url, "/start_expert_distribution_record") == 200
        chat(s.url)
        assert post(s.url, "/dump_expert_distribution_record") == 200
        for _ in range(3):
            chat(s.url)
        assert post(s.url, "/dump_expert_distribution_record") == 200
        post(w.url, "/start_expert_distribution_record")
        chat(w.url)
        post(w.url, "/dump_expert_distribution_record")
    both = json.loads(subprocess.run([str(py), "-c", LOAD, str(tmp_path / "dumps")], capture_output=True, text=True,
                                     timeout=120, check=True).stdout)  # one torch import for every file
    assert len(both) == 3
    first, second, wrong = both[0], both[1], both[2:]  # dumps/rec/*.pt sort before dumps/wrong/*.pt
    assert first["keys"] == ["average_utilization_rate_over_window", "logical_count", "rank"]
    assert first["shape"] == [8, LAYERS, EXPERTS] and first["dtype"] == "torch.int64" and first["min"] >= 0
    assert 0 < first["total"] < second["total"]  # counts grow with the requests served since the start
    assert second["top"][0] == 0  # layer 0 is dense (first_k_dense_replace 1): nothing routed
    assert all(top > 3 * mean for top, mean in zip(second["top"][1:], second["mean"][1:]))  # skewed
    assert len(set(second["hot"][1:])) > 1  # the MoE layers differ in their hot expert
    assert wrong[0]["shape"] == [8, LAYERS, EXPERTS - 1]


def test_recorder_without_its_mode_answers_500_as_the_noop_recorder(tmp_path):
    with Standin(tmp_path) as s:
        with pytest.raises(urllib.error.HTTPError) as e:
            post(s.url, "/start_expert_distribution_record")
        assert e.value.code == 500


@pytest.mark.parametrize("mode,env,text", [("gibberish", {}, "bbbbbbbb"),
                                           ("gibberish", {"STANDIN_GIBBERISH": "bang"}, "!!!!!!!!"),
                                           ("zero", {}, "")])
def test_bad_modes_answer_as_documented(tmp_path, mode, env, text):
    with Standin(tmp_path, mode=mode, env=env) as s:
        doc = chat(s.url)
    assert doc["choices"][0]["message"]["content"] == text
    assert doc["usage"]["completion_tokens"] == len(text)


def test_crash2_dies_on_the_second_request(tmp_path):
    with Standin(tmp_path, mode="crash2") as s:
        assert chat(s.url)["usage"]["completion_tokens"] == 8
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            chat(s.url)
        assert wait_until(lambda: not s.alive())
        assert s.proc.returncode == 1 and "scheduler is dead" in s.err


def test_garbage_only_above_the_threshold(tmp_path):
    with Standin(tmp_path, mode="garbage_above", args=("--kt-gpu-prefill-token-threshold", "20")) as s:
        short = chat(s.url)["choices"][0]["message"]["content"]
        long = chat(s.url, " ".join(["word"] * 40))["choices"][0]["message"]["content"]
    assert short.startswith("The capital of France") and long == "b" * 8


@pytest.mark.parametrize("argv", [["-c", "import sglang"], ["/nonexistent/sglang_worker.py", "facts"],
                                  ["-I", "-c", "print(1)"], ["-m", "pip", "list"]])
def test_run_as_an_interpreter_for_anything_else_it_refuses_and_serves_nothing(tmp_path, argv):
    """kt-launch asks runtime.python for SGLang's parser and its packages by running scripts and `-c` code in it:
    the stand-in as runtime.python answers those at once with an error (no sglang here) instead of serving on the
    default port 30000 until killed, which held a port other tests plan on."""
    exe = make_standin(tmp_path)
    done = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "STANDIN_DIR": str(tmp_path)})
    assert done.returncode == 1 and "not an interpreter" in done.stderr
    assert not (tmp_path / "pid").exists()  # it never got as far as serving
