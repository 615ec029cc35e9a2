"""A small HTTP/1.1 client for the requests kt-launch sends to a server it started (smoke, bench): one deadline for
the whole request, a cancel flag seen within 0.25 s, bounded sizes, and Server-Sent Events handed over as they
arrive (so TTFT is measured at the first token, not at the end). Plain sockets, no proxy: the server is local or
named by the user's --url.

Bounded: a status line and headers of at most 64 KiB, a body of at most 16 MiB, an event line of at most 1 MiB,
an event stream of at most 64 MiB;
past those the request fails with a message, never a memory blow-up or a hang."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from kt_launch.core.secrets import scrub_bytes
from kt_launch.facts.reader import Kind, ReadError, parse_json

MAX_HEAD = 64 * 1024
MAX_BODY = 16 << 20
MAX_EVENT_LINE = 1 << 20
MAX_STREAM = 64 << 20  # a whole event stream (65536 tokens of ~300-byte events fit): an endless one is cut here
ANSWER_JSON = Kind("server answer", MAX_BODY, 64)


def json_of(data: bytes | str) -> Any:
    """A server's JSON (a body or one event) through the bounded parser (facts/reader.py: depth, numbers, no
    RecursionError); None when it is not such JSON. A server's answer is data to judge, never a reason to crash."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        return parse_json("server answer", raw, ANSWER_JSON)
    except ReadError:
        return None


def error_text(body: bytes) -> str:
    """The server's own message of a non-200 answer (OpenAI `message`, FastAPI `detail`), shortened."""
    doc = json_of(body)
    if doc is None:
        return body[:200].decode("utf-8", "replace").strip()
    return message_of(doc)


def message_of(doc: Any) -> str:
    """The message in an answer already parsed (`error.message`, `message`, `detail`, `error`), else the JSON
    itself, shortened."""
    if isinstance(doc, dict):
        err = doc.get("error") if isinstance(doc.get("error"), dict) else doc
        for key in ("message", "detail", "error"):
            if isinstance(err.get(key), (str, list)):
                return str(err[key])[:200]
    return json.dumps(doc)[:200]


def _count(text: str, max_digits: int) -> int | None:
    """A decimal count of at most `max_digits` ASCII digits (a status code, a Content-Length), else None: int() of
    a header value takes Unicode digits and raises past 4300 digits."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= max_digits else None


class HttpFailure(Exception):
    """No (whole) answer: refused, reset, cut off, over a limit, past the deadline (`timed_out`), or cancelled."""

    def __init__(self, why: str, timed_out: bool = False):
        super().__init__(why)
        self.timed_out = timed_out


@dataclass
class Answer:
    status: int
    body: bytes  # the whole body, or b"" when it was streamed to on_event


def _recv(sock: socket.socket, deadline: float, cancel: threading.Event | None) -> bytes:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HttpFailure("no answer before the deadline", timed_out=True)
        if cancel is not None and cancel.is_set():
            raise HttpFailure("cancelled")
        sock.settimeout(min(left, 0.25))
        try:
            return sock.recv(65536)
        except socket.timeout:
            continue
        except OSError as e:
            raise HttpFailure(f"the connection broke ({e.strerror or e})") from None


class _Events:
    """SSE: `data: ...` lines handed to on_event as text."""

    def __init__(self, on_event: Callable[[str], None], secrets: set[str]):
        self.on_event, self.buf, self.secrets = on_event, b"", secrets
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > MAX_STREAM:
            raise HttpFailure(f"an event stream longer than {MAX_STREAM} bytes")
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_EVENT_LINE:
                    raise HttpFailure(f"an event line longer than {MAX_EVENT_LINE} bytes")
                return
            line, self.buf = self.buf[:i].rstrip(b"\r"), self.buf[i + 1:]
            if line.startswith(b"data:"):
                self.on_event(scrub_bytes(line[5:].strip(), self.secrets).decode("utf-8", "replace"))


def request(url: str, body: dict | None, deadline: float, *, api_key: str | None = None,
            on_event: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> Answer:
    """POST `body` as JSON (GET when None) to `url`. A 200 answer of type text/event-stream goes to `on_event` line
    by line when given. Raises HttpFailure."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise HttpFailure("only http://HOST:PORT URLs are supported")
    host, port = parts.hostname, parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    data = json.dumps(body).encode() if body is not None else b""
    netloc = f"[{host}]" if ":" in host else host
    head = [f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1", f"Host: {netloc}:{port}",
            "User-Agent: kt-launch", "Accept: application/json, text/event-stream", "Connection: close"]
    if api_key:
        head.append(f"Authorization: Bearer {api_key}")
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
    left = deadline - time.monotonic()
    if left <= 0:
        raise HttpFailure("no answer before the deadline", timed_out=True)
    try:
        sock = socket.create_connection((host, port), timeout=min(left, 30.0))
    except (OSError, UnicodeError) as e:  # UnicodeError: a host name IDNA cannot encode (a label over 63)
        raise HttpFailure(f"cannot connect to {netloc[:255]}:{port} ({getattr(e, 'strerror', None) or e})") from None
    try:
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(raw)
        except OSError as e:
            raise HttpFailure(f"cannot send the request ({e.strerror or e})") from None
        # a server may echo the key it was sent ("invalid api key sk-..."): masked in all it answers, as sent and
        # as a JSON string holds it, so no message, row or event of kt-launch shows it
        secrets = {api_key, json.dumps(api_key)[1:-1]} if api_key else set()
        return _read(sock, deadline, on_event, cancel, secrets)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _read(sock, deadline, on_event, cancel, secrets: set[str]) -> Answer:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock, deadline, cancel)
        if not chunk:
            raise HttpFailure("the server closed the connection without an answer" if not buf else
                              "the answer was cut off in its headers")
        buf += chunk
        if len(buf) > MAX_HEAD and b"\r\n\r\n" not in buf[:MAX_HEAD + 4]:
            raise HttpFailure(f"headers longer than {MAX_HEAD} bytes")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status_parts = lines[0].split()
    status = _count(status_parts[1], 3) if len(status_parts) >= 2 else None
    if status is None or not status_parts[0].startswith("HTTP/"):
        raise HttpFailure(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    streaming = on_event is not None and status == 200 and "text/event-stream" in headers.get("content-type", "")
    events = _Events(on_event, secrets) if streaming else None
    body = bytearray()

    def take(data: bytes) -> None:
        if events is not None:
            events.feed(data)
            return
        if len(body) + len(data) > MAX_BODY:
            raise HttpFailure(f"an answer longer than {MAX_BODY} bytes")
        body.extend(data)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        _chunked(sock, rest, deadline, cancel, take)
    elif (n := _count(headers.get("content-length", ""), 19)) is not None:
        if n > MAX_BODY and events is None:
            raise HttpFailure(f"an answer longer than {MAX_BODY} bytes")
        got = len(rest)
        take(rest[:n])
        while got < n:
            chunk = _recv(sock, deadline, cancel)
            if not chunk:
                raise HttpFailure("the answer was cut off")
            take(chunk[:n - got])
            got += len(chunk)
    else:  # until the server closes
        take(rest)
        while True:
            chunk = _recv(sock, deadline, cancel)
            if not chunk:
                break
            take(chunk)
    return Answer(status, scrub_bytes(bytes(body), secrets))


def _chunked(sock, buf: bytes, deadline, cancel, take) -> None:
    """Transfer-Encoding: chunked, decoded as it arrives (each piece handed to `take` at once)."""
    def more() -> bytes:
        chunk = _recv(sock, deadline, cancel)
        if not chunk:
            raise HttpFailure("the answer was cut off")
        return chunk

    while True:
        while b"\r\n" not in buf:
            if len(buf) > 1024:
                raise HttpFailure("a bad chunk size line")
            buf += more()
        size_line, buf = buf.split(b"\r\n", 1)
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            raise HttpFailure(f"a bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            return
        while size > 0:
            if not buf:
                buf = more()
            piece = buf[:size]
            take(piece)
            size -= len(piece)
            buf = buf[len(piece):]
        while len(buf) < 2:
            buf += more()
        buf = buf[2:]
