"""Readiness helpers: where to poll, the URL and curl shown, and a real /health on loopback."""

import json
import shlex
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kt_launch.run.health import base_url, curl_example, poll_health


def test_wildcards_are_polled_on_loopback():
    assert base_url("0.0.0.0", 1) == "http://127.0.0.1:1"
    assert base_url("::", 1) == "http://[::1]:1"
    assert base_url("fe80::1", 1) == "http://[fe80::1]:1"
    assert base_url("fe80::1%eth0", 1) == "http://[fe80::1%25eth0]:1"
    assert base_url("localhost", 30000) == "http://localhost:30000"


def test_curl_pastes_into_a_shell_and_never_holds_the_key():
    line, data = curl_example("http://127.0.0.1:30000", "m o'del", "west", has_api_key=True)
    words = shlex.split(line + " " + data.strip())
    assert words[:2] == ["curl", "http://127.0.0.1:30000/v1/chat/completions"]
    assert "Authorization: Bearer $API_KEY" in words  # expanded by the user's shell, never printed by us
    body = json.loads(words[words.index("-d") + 1])
    assert body["model"] == "m o'del" and body["lora_path"] == "west"
    line, data = curl_example("http://h:1", "m", None, has_api_key=False)
    assert "Authorization" not in line and "lora_path" not in data


def test_poll_health_against_a_real_loopback_server_that_turns_healthy():
    state = {"ok": False, "auth": None}

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            state["auth"] = self.headers.get("Authorization")
            self.send_response(200 if state["ok"] else 503)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/health"
        assert poll_health(url, timeout=2) == 503
        state["ok"] = True
        assert poll_health(url, timeout=2, api_key="k-123") == 200
        assert state["auth"] == "Bearer k-123"
    finally:
        srv.shutdown()
        srv.server_close()
    assert poll_health(url, timeout=1) is None  # nothing listens any more


def test_poll_health_ignores_proxy_settings(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would refuse every request if used
    srv = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (BaseHTTPRequestHandler,), {
        "do_GET": lambda self: (self.send_response(200), self.end_headers()),
        "log_message": lambda self, *a: None}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert poll_health(f"http://127.0.0.1:{srv.server_address[1]}/health", timeout=2) == 200
    finally:
        srv.shutdown()
        srv.server_close()
