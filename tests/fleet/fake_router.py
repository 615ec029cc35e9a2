"""A stand-in for sglang_router.launch_router (installed as a package on a PYTHONPATH by the tests): answers
GET /health with 200 on --port, records its pid in $FAKE_DIR/router/pid, exits 0 on SIGTERM/SIGINT.
$FAKE_ROUTER_EXIT0=1: exit 0 at once (a router that stops before it is ready). Loopback only."""
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    argv = sys.argv[1:]
    port = int(argv[argv.index("--port") + 1])
    d = os.path.join(os.environ["FAKE_DIR"], "router")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "pid"), "w") as fh:
        fh.write(str(os.getpid()))
    if os.environ.get("FAKE_ROUTER_EXIT0") == "1":
        print("router: giving up", file=sys.stderr, flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    signal.signal(signal.SIGINT, lambda *a: os._exit(0))

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"router: listening on {port}", file=sys.stderr, flush=True)
    while True:
        time.sleep(0.05)


main()
