"""A stand-in SGLang replica for fleet tests: run as `FAKE -m sglang.launch_server --host H --port P ...`.

Like tests/operate/fake_sglang.py, plus what the real sglang-router asks of a worker: GET /health,
/health_generate, /model_info, /server_info (and their get_ aliases), /v1/models, and
POST /v1/chat/completions answered with a reply that names this replica. Everything it records lives in
$FAKE_DIR/<port>/ (argv.json, env.json, pid, hits = chat requests served, got_signal, cleaned).
Signals: SIGINT/SIGTERM -> record, clean up for $FAKE_CLEANUP s (default 0.3), exit 0. Loopback only.
$FAKE_TRICKLE=1: /health sends its status line, then one byte every 0.2 s for ever (never a whole answer).
$FAKE_EXIT_AFTER=S: exit 0 after S seconds (before or after ready, as $FAKE_READY_AFTER says).
$FAKE_CRASH_LINES=FILE: after "Load weight begin", the lines of FILE on stderr, then exit 1 (a crash at load).
"""
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def val(flag, default=None):
    argv = sys.argv[1:]
    return argv[argv.index(flag) + 1] if flag in argv else default


PORT = int(val("--port", "30000"))
D = os.path.join(os.environ["FAKE_DIR"], str(PORT))
os.makedirs(D, exist_ok=True)
START = time.monotonic()
READY_AFTER = float(os.environ.get("FAKE_READY_AFTER", "0.5"))
MODEL = val("--served-model-name") or val("--model-path") or "default"
LOCK = threading.Lock()
HITS = [0]


def rec(name, text):
    tmp = os.path.join(D, name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, os.path.join(D, name))


rec("argv.json", json.dumps(sys.argv[1:]))
rec("env.json", json.dumps(dict(os.environ)))
rec("pid", str(os.getpid()))


def on_signal(signum, frame):
    rec("got_signal", signal.Signals(signum).name)
    time.sleep(float(os.environ.get("FAKE_CLEANUP", "0.3")))
    rec("cleaned", "1")
    os._exit(0)


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)

INFO = {
    "/model_info": {"model_path": val("--model-path"), "tokenizer_path": val("--model-path"),
                    "is_generation": True, "served_model_name": MODEL},
    "/server_info": {"model_path": val("--model-path"), "tp_size": int(val("--tp-size", "1")),
                     "dp_size": 1, "served_model_name": MODEL, "version": "stand-in"},
    "/v1/models": {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "stand-in"}]},
}
INFO["/get_model_info"] = INFO["/model_info"]
INFO["/get_server_info"] = INFO["/server_info"]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code, body):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        ready = time.monotonic() - START >= READY_AFTER
        if path == "/health" and os.environ.get("FAKE_TRICKLE") == "1":
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while True:
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        if path in ("/health", "/health_generate"):
            self._send(200 if ready else 503, b"" if ready else b"loading")
        elif path in INFO:
            self._send(200, INFO[path])
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.path.split("?", 1)[0] != "/v1/chat/completions":
            self._send(404, {"error": "not found"})
            return
        with LOCK:
            HITS[0] += 1
            rec("hits", str(HITS[0]))
        try:
            model = json.loads(body or b"{}").get("model", MODEL)
        except ValueError:
            model = MODEL
        self._send(200, {
            "id": f"chatcmpl-{PORT}-{HITS[0]}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"hello from replica on port {PORT}"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6},
        })

    def log_message(self, *a):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", PORT), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print("server_args=ServerArgs(" + ", ".join(sys.argv[1:]) + ")", flush=True)
print("[2026-01-01 00:00:01] Load weight begin.", file=sys.stderr, flush=True)
if os.environ.get("FAKE_CRASH_LINES"):
    with open(os.environ["FAKE_CRASH_LINES"]) as fh:
        sys.stderr.write(fh.read())
    sys.stderr.flush()
    os._exit(1)
print("INFO:     Uvicorn running on http://127.0.0.1:%d" % PORT, file=sys.stderr, flush=True)
rec("loading", "1")
EXIT_AFTER = os.environ.get("FAKE_EXIT_AFTER")
while True:
    time.sleep(0.05)
    if EXIT_AFTER is not None and time.monotonic() - START >= float(EXIT_AFTER):
        os._exit(0)
