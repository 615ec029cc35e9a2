"""A fake SGLang for supervise tests: run as `FAKE -m sglang.launch_server --host H --port P ...`.

It records its argv, environment and pid under $FAKE_DIR, prints SGLang-like log lines (including
`server_args=...` with every argument, as SGLang does), and behaves as $FAKE_MODE says:
  serve          HTTP on 127.0.0.1:PORT (always loopback); /health 503 until $FAKE_READY_AFTER s, then 200
  load           "Load weight begin", then wait for ever
  die            a traceback on stderr, exit 7
  die_signal     kill itself with SIGUSR1
  orphan         start a grandchild in the same process group, then exit 3
  daemon         start a grandchild that calls setsid() (leaves the group), then exit 3
  exit0          "Load weight begin", then exit 0 (before it is ready)
  die_once       the first start exits 5, a restart serves (starts: one pid a line per start)
  trickle        /health sends its status line, then one header byte every 0.2 s for ever (never a whole answer)
  orphans        serve; then $FAKE_ORPHANS short-lived orphans (double fork) come back to kt-launch to be reaped
  flood          serve; once ready, $FAKE_FLOOD_MB MB of log lines on stdout; the seconds it took in flood_s
  crash          the lines of the file $FAKE_LINES on stderr, then exit $FAKE_EXIT (or die by signal $FAKE_SIGNAL);
                 a restart prints $FAKE_LINES_AGAIN instead when set
  preflood       before /health answers at all: $FAKE_LONG_LINES lines of $FAKE_LONG_KB kB of `None, ` each, then
                 $FAKE_FLOOD_MB MB of start-up lines (each matching phase patterns) on stderr; the seconds it took
                 in preflood_s (its writes block on a full pipe, so that is kt-launch's throughput); then serve
$FAKE_ECHO_ENV=NAME prints NAME=value of that variable (as servers that log their environment do).
Signals: SIGINT/SIGTERM are recorded in got_signal; then with $FAKE_IGNORE=1 they are ignored, else a
cleanup of $FAKE_CLEANUP s runs (longer than `kt run`'s 0.25 s) and writes `cleaned` before exit 0.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

D = os.environ["FAKE_DIR"]
MODE = os.environ.get("FAKE_MODE", "serve")
START = time.monotonic()


def rec(name, text):
    tmp = os.path.join(D, name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, os.path.join(D, name))


def val(flag, default=None):
    argv = sys.argv[1:]
    return argv[argv.index(flag) + 1] if flag in argv else default


rec("argv.json", json.dumps(sys.argv[1:]))
rec("env.json", json.dumps(dict(os.environ)))
rec("pid", str(os.getpid()))
with open(os.path.join(D, "starts"), "a") as fh:  # one line per start (restarts add lines)
    fh.write(f"{os.getpid()}\n")
if MODE == "die_once":  # the first start dies (exit 5), a restart serves
    with open(os.path.join(D, "starts")) as fh:
        MODE = "die5" if len(fh.read().split()) == 1 else "serve"


def on_signal(signum, frame):
    rec("got_signal", signal.Signals(signum).name)
    if os.environ.get("FAKE_IGNORE") == "1":
        return
    time.sleep(float(os.environ.get("FAKE_CLEANUP", "0.8")))
    rec("cleaned", "1")
    os._exit(0)


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)

print("server_args=ServerArgs(" + ", ".join(sys.argv[1:]) + ")", flush=True)
if os.environ.get("FAKE_ECHO_ENV"):
    name = os.environ["FAKE_ECHO_ENV"]
    print(f"environment: {name}={os.environ.get(name)}", flush=True)
print("[2026-01-01 00:00:00] Init torch distributed begin.", file=sys.stderr, flush=True)

if MODE == "die":
    print("[2026-01-01 00:00:01] Load weight begin.", file=sys.stderr, flush=True)
    print("Traceback (most recent call last):\n  File \"model_runner.py\", line 1\nRuntimeError: boom in "
          "kt_kernel", file=sys.stderr, flush=True)
    sys.exit(7)
if MODE == "die_signal":
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(5)
if MODE == "orphan":
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    rec("grandchild", str(g.pid))
    print("Load weight begin.", file=sys.stderr, flush=True)
    time.sleep(0.3)
    os._exit(3)
if MODE == "daemon":
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    rec("grandchild", str(g.pid))
    print("Load weight begin.", file=sys.stderr, flush=True)
    time.sleep(0.3)
    os._exit(3)
if MODE == "die5":
    print("[2026-01-01 00:00:01] Load weight begin.", file=sys.stderr, flush=True)
    print("RuntimeError: first start fails", file=sys.stderr, flush=True)
    sys.exit(5)
if MODE == "exit0":
    print("[2026-01-01 00:00:01] Load weight begin.", file=sys.stderr, flush=True)
    sys.exit(0)
if MODE == "crash":
    with open(os.path.join(D, "starts")) as fh:
        again = len(fh.read().split()) > 1
    with open(os.environ["FAKE_LINES_AGAIN"] if again and os.environ.get("FAKE_LINES_AGAIN") else
              os.environ["FAKE_LINES"]) as fh:
        sys.stderr.write(fh.read())
    sys.stderr.flush()
    if os.environ.get("FAKE_SIGNAL"):
        sig = int(os.environ["FAKE_SIGNAL"])
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(5)
    sys.exit(int(os.environ.get("FAKE_EXIT", "1")))
if MODE == "trickle":
    import socket

    def trickle(conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while True:
                conn.sendall(b"X")
                time.sleep(0.2)
        except OSError:
            conn.close()

    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", int(val("--port", "30000"))))
    lst.listen(64)
    print("[2026-01-01 00:00:01] Load weight begin.", file=sys.stderr, flush=True)
    rec("loading", "1")
    while True:
        c, _ = lst.accept()
        threading.Thread(target=trickle, args=(c,), daemon=True).start()
if MODE == "load":
    print("[2026-01-01 00:00:01] Load weight begin. avail mem=10.00 GB", file=sys.stderr, flush=True)
    rec("loading", "1")
    while True:
        time.sleep(0.05)

ready_after = float(os.environ.get("FAKE_READY_AFTER", "1.0"))
if MODE == "preflood":
    err = sys.stderr.buffer
    t0 = time.monotonic()
    long_line = b"None, " * int(float(os.environ.get("FAKE_LONG_KB", "1000")) * 1000 / 6) + b"\n"
    for _ in range(int(os.environ.get("FAKE_LONG_LINES", "1"))):
        err.write(long_line)
    line = ("[2026-01-01 00:00:01 TP0] Loading safetensors checkpoint shards:  42% Completed | 25/59 Load weight "
            "KT cuda graph Error: not really\n").encode()
    block = line * (65536 // len(line))
    total, n = int(float(os.environ.get("FAKE_FLOOD_MB", "20")) * 1e6), 0
    while n < total:
        err.write(block)
        n += len(block)
    err.flush()
    rec("preflood_s", str(time.monotonic() - t0))
    START = time.monotonic() - ready_after  # ready from now on


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/health" and time.monotonic() - START >= ready_after
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"loading")

    def log_message(self, *a):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", int(val("--port", "30000"))), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
print("[2026-01-01 00:00:01] Load weight begin.", file=sys.stderr, flush=True)
rec("loading", "1")
time.sleep(ready_after / 3)
print("[2026-01-01 00:00:02] KTMoEWrapper: kt-kernel CPU experts ready", file=sys.stderr, flush=True)
time.sleep(ready_after / 3)
print("[2026-01-01 00:00:03] Capture cuda graph begin.", file=sys.stderr, flush=True)
time.sleep(ready_after / 3)
print("INFO:     Uvicorn running on http://127.0.0.1:%s" % val("--port"), file=sys.stderr, flush=True)
if MODE == "orphans":
    for _ in range(int(os.environ.get("FAKE_ORPHANS", "30"))):
        if os.fork() == 0:  # the child forks a grandchild that outlives it briefly, then both exit
            if os.fork() == 0:
                time.sleep(0.2)
                os._exit(0)
            os._exit(0)
    while True:
        try:
            os.waitpid(-1, 0)  # reap the direct children; the grandchildren go to kt-launch
        except ChildProcessError:
            break
    rec("orphans", "1")
if MODE == "flood":
    while not os.path.exists(os.path.join(D, "go")):
        time.sleep(0.05)
    line = ("[2026-01-01 00:00:04] Decode batch. #running-req: 1, #token: 123, token usage: 0.00, gen throughput "
            "(token/s): 42.00, #queue-req: 0, Load weight KT cuda graph Error: not really\n").encode()
    total = int(float(os.environ.get("FAKE_FLOOD_MB", "20")) * 1e6)
    block = line * (65536 // len(line))
    t0 = time.monotonic()
    out = sys.stdout.buffer
    n = 0
    while n < total:
        out.write(block)
        n += len(block)
    out.flush()
    rec("flood_s", str(time.monotonic() - t0))
while True:
    time.sleep(0.05)
