"""Readiness of a started server: where to poll, one poll, and what to tell the user once it is up.

A poll is a GET /health over a non-blocking socket with one deadline for the whole request (connect, send,
status line and headers): a server that accepts and then trickles bytes cannot stretch it, so the
supervisor's --ready-timeout and its signals are never held up by a poll.
"""

from __future__ import annotations

import errno
import json
import selectors
import shlex
import socket
import time
from urllib.parse import urlsplit

from kt_launch.core.fleet import http_url

_MAX_HEAD = 64 * 1024  # a status line and headers longer than this are no answer


def base_url(host: str, port: int | str) -> str:
    """Where a client on this machine reaches a server bound to `host`: wildcards on loopback, IPv6 in brackets
    (with its zone as %25), the same rule as the fleet's URLs."""
    return http_url(host, int(port), local=True)


class HealthProbe:
    """One GET in flight, driven by a selector: step() on each event, `status` when done (None = no answer).

    Direct connection only: http_proxy / https_proxy from the environment never apply to a loopback poll."""

    def __init__(self, url: str, deadline: float, api_key: str | None = None):
        self.deadline = deadline
        self.done = False
        self.status: int | None = None
        self.sock: socket.socket | None = None
        self._head = b""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
            netloc = f"[{host}]" if ":" in host else host
            self._out = (f"GET {path} HTTP/1.1\r\nHost: {netloc}:{port}\r\nUser-Agent: kt-launch\r\n{auth}"
                         "Connection: close\r\n\r\n").encode("latin-1")
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            self.sock = socket.socket(family, kind, proto)
            self.sock.setblocking(False)
            err = self.sock.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EINTR):
                self.finish(None)
        except (OSError, ValueError, UnicodeError):
            self.finish(None)

    @property
    def events(self) -> int:
        return selectors.EVENT_WRITE if self._out else selectors.EVENT_READ

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def step(self) -> None:
        """Advance on a ready socket: send the request, then read the status line and headers."""
        if self.done or self.sock is None:
            return
        try:
            if self._out:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    return self.finish(None)
                self._out = self._out[self.sock.send(self._out):]
                return
            chunk = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self.finish(None)
        self._head += chunk
        end = self._head.find(b"\r\n\r\n")
        if end >= 0 or not chunk or len(self._head) > _MAX_HEAD:
            self.finish(_status(self._head) if end >= 0 else None)

    def expired(self, now: float) -> bool:
        if not self.done and now >= self.deadline:
            self.finish(None)
        return self.done

    def finish(self, status: int | None) -> None:
        self.done, self.status = True, status
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


def _status(head: bytes) -> int | None:
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None


def poll_health(url: str, timeout: float = 2.0, api_key: str | None = None) -> int | None:
    """GET url within `timeout` seconds in all; the HTTP status, or None when nothing answers in time."""
    probe = HealthProbe(url, time.monotonic() + timeout, api_key)
    with selectors.DefaultSelector() as sel:
        while not probe.expired(time.monotonic()):
            fd = probe.fileno()
            sel.register(fd, probe.events)
            ready = sel.select(max(0.0, probe.deadline - time.monotonic()))
            sel.unregister(fd)
            if ready:
                probe.step()
    return probe.status


def curl_example(url: str, model: str, adapter: str | None, has_api_key: bool) -> list[str]:
    """A ready-to-paste curl for /v1/chat/completions (the key as $API_KEY, never its value)."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64}
    if adapter is not None:
        body["lora_path"] = adapter
    args = ["curl", f"{url}/v1/chat/completions", "-H", "Content-Type: application/json"]
    line = shlex.join(args)
    if has_api_key:
        line += ' -H "Authorization: Bearer $API_KEY"'
    return [line, "  -d " + shlex.quote(json.dumps(body))]
