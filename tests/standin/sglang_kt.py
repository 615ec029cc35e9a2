"""A stand-in for sglang-kt 0.7.2's HTTP server, for smoke, bench and calibrate tests (no GPU, no model).

Two ways to run it:
  PY tests/standin/sglang_kt.py --port 0 [--model-path DIR] [--standin-mode MODE] ...
      binds 127.0.0.1 on a free port and prints `STANDIN_PORT=<port>` as its first stdout line;
  STANDIN -m sglang.launch_server --host H --port P --model-path DIR ...
      as the server kt-launch supervises (tests/standin/support.make_standin writes the executable; the argv
      kt-launch renders is accepted as is: unknown flags are ignored, `-m sglang.launch_server` too).
  Run as an interpreter for anything else (a script, `-c`, another `-m`): exit 1 at once, "not an interpreter".

Routes follow sglang-kt 0.7.2's sglang/srt/entrypoints/http_server.py (its `@app.get/@app.post/@app.api_route`
lines; tests/contract/test_standin_contract.py checks each route here exists in the real app, and that the
bodies validate against the real protocol.py models): GET /health, /health_generate, /model_info,
/get_model_info, /server_info, /get_server_info, /v1/models; POST /v1/chat/completions, /v1/completions,
/generate, /tokenize, /v1/tokenize (stream and non-stream, `usage` in both: stream_options.include_usage adds the
usage chunk as sglang does); GET|POST /start_expert_distribution_record, /stop_expert_distribution_record,
/dump_expert_distribution_record (eplb/expert_distribution.py L952-976, L1008-1014).

Modes ($STANDIN_MODE or --standin-mode):
  good           a sane, deterministic answer (words of a fixed English paragraph, `max_tokens` of them at most)
  gibberish      degenerate text: $STANDIN_GIBBERISH = repeat ("bbbb...", #1577), bang ("!!!!...", token id 0),
                 amp ("&#&#...", #1971) or junk (mixed scripts and control characters)
  zero           completion_tokens 0 and empty text (#2001)
  crash2         the second generation request kills the server (a traceback on stderr, exit 1; #1781)
  garbage_above  good, but gibberish when the prompt has more tokens than $STANDIN_GARBAGE_ABOVE (default: the
                 --kt-gpu-prefill-token-threshold it was started with; #1816)
  slow           good, after $STANDIN_TTFT_S (default 1.0) before the first token and $STANDIN_CHUNK_S (0.05)
                 between stream chunks
Tokens: one token = one word or one punctuation character (regex `\\w+|[^\\w\\s]`); /tokenize counts the same way.
Recorder: active when started with --expert-distribution-recorder-mode (else the routes answer 500 as the real
Noop recorder raises). The dump writes `expert_distribution_recorder_<time.time()>.pt` into
$SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR (default /tmp) with torch.save of {rank, logical_count,
average_utilization_rate_over_window}: logical_count int64 [buffer, num_hidden_layers, num_experts] (buffer =
--expert-distribution-recorder-buffer-size or 1000, a circular buffer as sglang's stat mode keeps; layers and
experts from the model dir's config.json), one row per request served while recording, Zipf-like per layer (each
layer its own expert order; dense layers, first_k_dense_replace / mlp_only_layers, stay 0). --recorder-shape-wrong / $STANDIN_RECORDER_SHAPE_WRONG=1 drops the last expert.
Without torch in this interpreter the dump answers 500.
$STANDIN_DIR (or $FAKE_DIR): records argv.json, pid and `requests` (generation requests served) there; in
$STANDIN_DIR/<port>/ with $STANDIN_PER_PORT=1 (a fleet's replicas).
$STANDIN_READY_AFTER: seconds before /health answers 200 (default 0.2). SIGTERM/SIGINT: exit 0.
$STANDIN_MODE_RESTARTED: the mode of a stand-in started where one ran before (its dir holds a pid file: a server
that --restart on-failure started again), e.g. good first, gibberish after the restart.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "0.7.2"
TOKEN = re.compile(r"\w+|[^\w\s]")
ANSWER = ("The capital of France is Paris. It lies on the Seine, and about two million people live in the city "
          "itself. Paris is known for the Eiffel Tower, the Louvre and its cafés; the answer to 2 + 2 is 4.")
MODES = ("good", "gibberish", "zero", "crash2", "garbage_above", "slow")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-m", dest="module")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--model-path", "--model", dest="model_path", default="default")
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--kt-gpu-prefill-token-threshold", type=int, default=None)
    p.add_argument("--expert-distribution-recorder-mode", default=None)
    p.add_argument("--expert-distribution-recorder-buffer-size", type=int, default=None)
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--kt-method", default=None)
    p.add_argument("--kt-num-gpu-experts", type=int, default=None)
    p.add_argument("--kt-cpuinfer", type=int, default=None)
    p.add_argument("--kt-threadpool-count", type=int, default=None)
    p.add_argument("--tp-size", "--tp", dest="tp_size", type=int, default=1)
    p.add_argument("--standin-mode", default=os.environ.get("STANDIN_MODE", "good"), choices=MODES)
    p.add_argument("--recorder-shape-wrong", action="store_true",
                   default=os.environ.get("STANDIN_RECORDER_SHAPE_WRONG") == "1")
    args, _ = p.parse_known_args(argv)
    return args


ARGS = parse(sys.argv[1:])
MODEL = ARGS.served_model_name or ARGS.model_path
DIR = os.environ.get("STANDIN_DIR") or os.environ.get("FAKE_DIR")
if DIR and os.environ.get("STANDIN_PER_PORT") == "1":  # several stand-ins (a fleet's replicas): one dir each
    DIR = os.path.join(DIR, str(ARGS.port))
    os.makedirs(DIR, exist_ok=True)
if DIR and os.path.exists(os.path.join(DIR, "pid")) and os.environ.get("STANDIN_MODE_RESTARTED") in MODES:
    ARGS.standin_mode = os.environ["STANDIN_MODE_RESTARTED"]  # started again after a death
START = time.monotonic()
READY_AFTER = float(os.environ.get("STANDIN_READY_AFTER", "0.2"))
LOCK = threading.Lock()
SERVED = [0]  # generation requests that reached the model


def rec(name: str, text: str) -> None:
    if not DIR:
        return
    tmp = os.path.join(DIR, name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, os.path.join(DIR, name))


def model_config() -> dict:
    try:
        with open(os.path.join(ARGS.model_path, "config.json")) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return {}
    return doc.get("text_config", doc) if isinstance(doc, dict) else {}


CONFIG = model_config()
CONTEXT = ARGS.context_length or int(CONFIG.get("max_position_embeddings") or 32768)


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def pieces(text: str) -> list[str]:
    """The text as the detokenizer would stream it: one piece per token, with the space before it."""
    out, prev = [], 0
    for m in TOKEN.finditer(text):
        out.append(text[prev:m.end()])
        prev = m.end()
    return out


def degenerate(n: int, seed: int) -> list[str]:
    kind = os.environ.get("STANDIN_GIBBERISH", "repeat")
    if kind == "bang":
        return ["!"] * n
    if kind == "amp":
        return ["&#"] * n
    if kind == "junk":
        rnd = random.Random(seed)
        alphabet = "\x07\x1bЖ§¤ÿ\u200b\ufffd░▒ψ₪ঃ\x00"
        return ["".join(rnd.choice(alphabet) for _ in range(3)) for _ in range(n)]
    return ["b"] * n


def answer(prompt_tokens: int, max_tokens: int | None) -> list[str]:
    """The pieces the 'model' generates for a prompt of `prompt_tokens` tokens (the mode decides)."""
    limit = 64 if max_tokens is None else max(0, int(max_tokens))
    mode = ARGS.standin_mode
    if mode == "zero":
        return []
    above = os.environ.get("STANDIN_GARBAGE_ABOVE") or ARGS.kt_gpu_prefill_token_threshold
    if mode == "gibberish" or (mode == "garbage_above" and above is not None and prompt_tokens > int(above)):
        return degenerate(limit, prompt_tokens)
    out = pieces(ANSWER)
    while len(out) < limit:  # long answers: the paragraph again
        out += [" " + out[0]] + out[1:]
    return out[:limit]


def served() -> int:
    """Count one generation request; the second one kills the server in crash2 mode."""
    with LOCK:
        SERVED[0] += 1
        n = SERVED[0]
        rec("requests", str(n))
    if ARGS.standin_mode == "crash2" and n >= 2:
        print("Traceback (most recent call last):\n  File \"scheduler.py\", line 1, in event_loop_overlap\n"
              "RuntimeError: CUDA error: an illegal memory access was encountered\n"
              "[2026-12-07 00:00:00] Rank 0 scheduler is dead. Exit code: -6", file=sys.stderr, flush=True)
        os._exit(1)
    return n


# ---------------------------------------------------------------------------------------------------------
# The expert-distribution recorder (stat mode)
# ---------------------------------------------------------------------------------------------------------

def _experts() -> int:
    for key in ("n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts"):
        if isinstance(CONFIG.get(key), int):
            return CONFIG[key]
    return 8


class Recorder:
    def __init__(self):
        self.layers = int(CONFIG.get("num_hidden_layers") or 2)
        self.experts = _experts()
        self.topk = int(CONFIG.get("num_experts_per_tok") or 2)
        self.buffer = ARGS.expert_distribution_recorder_buffer_size or 1000
        self.recording = False
        self.rows: list[list[list[int]]] = []
        self.next = 0
        # per layer: its own expert order (a permutation seeded by the layer) and Zipf weights over that order
        self.order = [random.Random(layer).sample(range(self.experts), self.experts) for layer in range(self.layers)]
        self.weights = [1.0 / (r + 1) ** 1.2 for r in range(self.experts)]
        # dense layers route nothing (their rows stay 0, as in sglang's recordings): DeepSeek's first_k_dense_replace,
        # Qwen's mlp_only_layers
        dense = set(range(int(CONFIG.get("first_k_dense_replace") or 0)))
        dense |= {i for i in CONFIG.get("mlp_only_layers") or () if isinstance(i, int)}
        self.dense = dense

    def record(self, n_tokens: int) -> None:
        """One forward pass over n_tokens: each token routed to top-k experts, spread Zipf-like per layer."""
        if not self.recording:
            return
        total, wsum = n_tokens * self.topk, sum(self.weights)
        row = []
        for layer in range(self.layers):
            counts = [0] * self.experts
            if layer not in self.dense:
                for rank, e in enumerate(self.order[layer]):
                    counts[e] = int(round(total * self.weights[rank] / wsum))
            row.append(counts)
        with LOCK:
            if self.buffer < 0 or len(self.rows) < self.buffer:  # -1: sglang's _InfiniteBuffer, it grows
                self.rows.append(row)
            else:
                self.rows[self.next] = row
            self.next = (self.next + 1) % self.buffer if self.buffer > 0 else 0

    def dump(self) -> str:
        import torch

        experts = self.experts - 1 if ARGS.recorder_shape_wrong else self.experts
        size = max(len(self.rows), 1) if self.buffer < 0 else self.buffer  # an infinite buffer: the passes it holds
        count = torch.zeros((size, self.layers, experts), dtype=torch.int64)
        with LOCK:
            for i, row in enumerate(self.rows):
                count[i] = torch.tensor([r[:experts] for r in row], dtype=torch.int64)
        out_dir = os.environ.get("SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR", "/tmp")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, f"expert_distribution_recorder_{time.time()}.pt")
        torch.save({"rank": 0, "logical_count": count, "average_utilization_rate_over_window": None}, path)
        print(f"[2026-12-07 00:00:00] Write expert distribution to {path}", file=sys.stderr, flush=True)
        return path


RECORDER = Recorder() if ARGS.expert_distribution_recorder_mode else None


def _preload_torch() -> None:
    """The real server has torch loaded; import it now, in the background, so the first dump does not wait."""
    try:
        import torch  # noqa: F401
    except ImportError:
        pass


if RECORDER is not None:
    threading.Thread(target=_preload_torch, daemon=True).start()


# ---------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------

def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion,
            "prompt_tokens_details": None, "reasoning_tokens": 0}


def chat_prompt_tokens(messages) -> int:
    n = 0
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        n += 4 + len(tokens(content if isinstance(content, str) else ""))  # role markers of a chat template
    return n + 2


class Handler(BaseHTTPRequestHandler):
    server_version = "uvicorn"

    def log_message(self, *a):
        pass

    # -- plumbing ----------------------------------------------------------------------------------------
    def _json(self, status: int, doc) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _text(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict | None:
        try:
            n = int(self.headers.get("Content-Length") or 0)
            doc = json.loads(self.rfile.read(n) or b"{}")
        except (ValueError, OSError):
            doc = None
        if not isinstance(doc, dict):
            self._json(400, {"object": "error", "message": "invalid JSON body", "type": "BadRequestError",
                             "code": 400})
            return None
        return doc

    def _authorized(self) -> bool:
        if ARGS.api_key and self.headers.get("Authorization") != f"Bearer {ARGS.api_key}":
            self._json(401, {"error": "Unauthorized"})
            return False
        return True

    def _ready(self) -> bool:
        return time.monotonic() - START >= READY_AFTER

    # -- routes ------------------------------------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/health_generate"):
            return self._text(200 if self._ready() else 503)
        if not self._authorized():
            return None
        if path in ("/model_info", "/get_model_info"):
            return self._json(200, {"model_path": ARGS.model_path, "tokenizer_path": ARGS.model_path,
                                    "is_generation": True, "preferred_sampling_params": None,
                                    "weight_version": "default", "has_image_understanding": False,
                                    "has_audio_understanding": False, "model_type": CONFIG.get("model_type"),
                                    "architectures": CONFIG.get("architectures")})
        if path in ("/server_info", "/get_server_info"):
            return self._json(200, {"model_path": ARGS.model_path, "served_model_name": MODEL,
                                    "tp_size": ARGS.tp_size, "kt_method": ARGS.kt_method,
                                    "kt_num_gpu_experts": ARGS.kt_num_gpu_experts, "kt_cpuinfer": ARGS.kt_cpuinfer,
                                    "kt_threadpool_count": ARGS.kt_threadpool_count,
                                    "kt_gpu_prefill_token_threshold": ARGS.kt_gpu_prefill_token_threshold,
                                    "internal_states": [{}], "version": VERSION})
        if path == "/v1/models":
            return self._json(200, {"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": int(time.time()), "owned_by": "sglang", "root": MODEL,
                 "parent": None, "max_model_len": CONTEXT}]})
        if path in RECORDER_ROUTES:
            return self._recorder(path)
        return self._json(404, {"detail": "Not Found"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/health_generate", "/model_info", "/server_info", "/v1/models"):
            return self._json(405, {"detail": "Method Not Allowed"})
        if not self._authorized():
            return None
        if path in RECORDER_ROUTES:
            return self._recorder(path)
        body = self._body()
        if body is None:
            return None
        if path in ("/tokenize", "/v1/tokenize"):
            prompt = body.get("prompt")
            if isinstance(prompt, list):
                toks = [list(range(len(tokens(str(p))))) for p in prompt]
                return self._json(200, {"tokens": toks, "count": [len(t) for t in toks], "max_model_len": CONTEXT})
            bos = int(body.get("add_special_tokens", True) is not False)
            toks = list(range(bos + len(tokens(str(prompt or "")))))
            return self._json(200, {"tokens": toks, "count": len(toks), "max_model_len": CONTEXT})
        if path == "/v1/chat/completions":
            if not isinstance(body.get("messages"), list):
                return self._json(400, {"object": "error", "message": "messages: field required",
                                        "type": "BadRequestError", "param": "messages", "code": 400})
            return self._generate("chat", chat_prompt_tokens(body["messages"]), body)
        if path == "/v1/completions":
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return self._json(400, {"object": "error", "message": "prompt: a string is required",
                                        "type": "BadRequestError", "param": "prompt", "code": 400})
            return self._generate("completion", 1 + len(tokens(prompt)), body)
        if path == "/generate":
            text = body.get("text")
            params = body.get("sampling_params") or {}
            return self._generate("generate", 1 + len(tokens(text if isinstance(text, str) else "")),
                                  {"max_tokens": params.get("max_new_tokens"), "stream": body.get("stream")})
        return self._json(404, {"detail": "Not Found"})

    def _recorder(self, path: str):
        if RECORDER is None:  # the Noop recorder raises; FastAPI answers 500
            return self._text(500, "Internal Server Error")
        if path == "/start_expert_distribution_record":
            with LOCK:
                RECORDER.rows, RECORDER.next = [], 0
            RECORDER.recording = True
            return self._text(200, "Start recording the expert distribution.\n")
        if path == "/stop_expert_distribution_record":
            RECORDER.recording = False
            return self._text(200, "Stop recording the expert distribution.\n")
        try:
            RECORDER.dump()
        except ImportError:
            print("stand-in: no torch in this interpreter: cannot write the .pt", file=sys.stderr, flush=True)
            return self._text(500, "Internal Server Error")
        return self._text(200, "Dump expert distribution record.\n")

    def _generate(self, kind: str, prompt_tokens: int, body: dict):
        if prompt_tokens > CONTEXT:
            return self._json(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                    "message": f"The input ({prompt_tokens} tokens) is longer than the model's "
                                               f"context length ({CONTEXT} tokens)."})
        served()
        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        out = answer(prompt_tokens, limit if isinstance(limit, int) else None)
        if RECORDER is not None:
            RECORDER.record(prompt_tokens + len(out))
        slow = ARGS.standin_mode == "slow"
        if slow:
            time.sleep(float(os.environ.get("STANDIN_TTFT_S", "1.0")))
        finish = "length" if isinstance(limit, int) and len(out) >= limit else "stop"
        rid = uuid.uuid4().hex
        created = int(time.time())
        if kind == "generate":
            return self._json(200, {"text": "".join(out), "output_ids": list(range(len(out))), "meta_info": {
                "id": rid, "finish_reason": {"type": finish}, "prompt_tokens": prompt_tokens,
                "completion_tokens": len(out), "cached_tokens": 0}})
        if not body.get("stream"):
            if kind == "chat":
                choice = {"index": 0, "message": {"role": "assistant", "content": "".join(out),
                                                  "reasoning_content": None, "tool_calls": None},
                          "logprobs": None, "finish_reason": finish, "matched_stop": None}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": "".join(out), "logprobs": None, "finish_reason": finish,
                          "matched_stop": None}
                obj = "text_completion"
            return self._json(200, {"id": rid, "object": obj, "created": created, "model": MODEL,
                                    "choices": [choice], "usage": usage(prompt_tokens, len(out)),
                                    "metadata": {"weight_version": "default"}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        chunk_s = float(os.environ.get("STANDIN_CHUNK_S", "0.05")) if slow else 0.0

        def event(choices, use=None):
            doc = {"id": rid, "object": obj, "created": created, "model": MODEL, "choices": choices,
                   "usage": use}
            self.wfile.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
            self.wfile.flush()

        def choice(text, finish_reason=None, role=None):
            if kind == "chat":
                delta = {"role": role, "content": text, "reasoning_content": None, "tool_calls": None}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason,
                        "matched_stop": None}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                    "matched_stop": None}

        try:
            if kind == "chat":
                event([choice("", role="assistant")])
            for i, piece in enumerate(out):
                if i and chunk_s:
                    time.sleep(chunk_s)
                event([choice(piece)])
            event([choice("", finish_reason=finish)])
            opts = body.get("stream_options") or {}
            if isinstance(opts, dict) and opts.get("include_usage"):
                event([], usage(prompt_tokens, len(out)))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        return None


RECORDER_ROUTES = ("/start_expert_distribution_record", "/stop_expert_distribution_record",
                   "/dump_expert_distribution_record")
# every route served here, as (method, path): the contract test finds each in the real app's routes
ROUTES = [("GET", p) for p in ("/health", "/health_generate", "/model_info", "/get_model_info", "/server_info",
                               "/get_server_info", "/v1/models")] + \
         [("POST", p) for p in ("/v1/chat/completions", "/v1/completions", "/generate", "/tokenize",
                                "/v1/tokenize")] + \
         [(m, p) for p in RECORDER_ROUTES for m in ("GET", "POST")]


def _serves(argv: list[str]) -> bool:
    """Only the two documented invocations serve. Run as an interpreter for anything else (kt-launch asking
    runtime.python for SGLang's parser or its installed packages: a script path, `-c CODE`, another `-m`), it would
    ignore the argv and serve on the default port 30000 until killed, holding a port other tests plan on."""
    pairs = zip(argv, argv[1:])
    return not argv or argv[0].startswith("--") or ("-m", "sglang.launch_server") in pairs


def main() -> None:
    if not _serves(sys.argv[1:]):
        sys.stderr.write(f"sglang-kt stand-in: not an interpreter: it serves only as `-m sglang.launch_server` "
                         f"(asked to run {sys.argv[1][:200]!r}); no sglang here\n")
        sys.exit(1)

    def stop(signum, frame):
        rec("got_signal", signal.Signals(signum).name)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rec("argv.json", json.dumps(sys.argv[1:]))
    rec("pid", str(os.getpid()))
    srv = ThreadingHTTPServer(("127.0.0.1" if ARGS.host in ("0.0.0.0", "::", "localhost") else ARGS.host,
                               ARGS.port), Handler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    print(f"STANDIN_PORT={port}", flush=True)
    print(f"server_args=ServerArgs(model_path={ARGS.model_path!r}, port={port})", flush=True)
    print("[2026-12-07 00:00:00] Load weight begin.", file=sys.stderr, flush=True)
    print(f"INFO:     Uvicorn running on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
