"""The smoke test's I/O: send resolve/smoke.py's requests to a server (streamed, each with a deadline), measure TTFT
and decode tok/s, and hand the replies to the judge. Used by --supervise (one instance, every fleet replica, then
the router) and by `kt-launch smoke --url`.

In the supervisor the requests run in a thread (SmokeRun) while the event loop keeps watching the server, its
output and signals; a stop cancels the requests within 0.25 s (run/http.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from kt_launch.core.smoke import Reply, SmokeRequest
from kt_launch.run.http import HttpFailure, error_text, json_of, message_of, request

DEFAULT_TIMEOUT = 300.0  # per request: a cold first request of a large MoE on CPU experts can take minutes


def body_of(req: SmokeRequest, model: str, extra: dict | None = None) -> tuple[str, dict]:
    """The path and JSON body of one request (stream with usage, temperature 0; `extra`: more fields)."""
    common = {"model": model, "temperature": 0, "max_tokens": req.max_tokens, "stream": True,
              "stream_options": {"include_usage": True}, **(extra or {})}
    if req.kind == "chat":
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": req.prompt}]}
    return "/v1/completions", {**common, "prompt": req.prompt}


def error_of(doc) -> str | None:
    """The message of an OpenAI error object (`{"object": "error", "message": ...}` or `{"error": {...}}`), which
    a server may send with HTTP 200 or as a stream event; None for anything else."""
    if not isinstance(doc, dict):
        return None
    err = doc.get("error")
    if doc.get("object") == "error" or isinstance(err, dict) or (isinstance(err, str) and "choices" not in doc):
        return message_of(doc) or "an error object"
    return None


class _Stream:
    """What the events of one streamed answer add up to."""

    def __init__(self, kind: str, sent: float):
        self.kind, self.sent = kind, sent
        self.text: list[str] = []
        self.first = self.last = None
        self.chunks = 0
        self.usage: dict | None = None
        self.error: str | None = None  # the server's error object, in the stream or as a 200 body

    def event(self, data: str) -> None:
        if data == "[DONE]":
            return
        doc = json_of(data)
        if not isinstance(doc, dict):
            return
        self.error = self.error or error_of(doc)
        if isinstance(doc.get("usage"), dict):
            self.usage = doc["usage"]
        choices = doc.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            if self.kind == "chat":
                delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                pieces = [delta.get("reasoning_content"), delta.get("content")]
            else:
                pieces = [choice.get("text")]
            got = "".join(p for p in pieces if isinstance(p, str))
            if got:
                now = time.monotonic()
                self.first = self.first if self.first is not None else now
                self.last = now
                self.chunks += 1
                self.text.append(got)

    def _count(self, key: str) -> int | None:
        v = (self.usage or {}).get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    def reply(self, req: SmokeRequest, status: int) -> Reply:
        completion = self._count("completion_tokens")
        n = completion if completion is not None else self.chunks
        rate = None
        if self.first is not None and self.last is not None and self.last > self.first and n > 1:
            rate = (n - 1) / (self.last - self.first)
        return Reply(req, status, "", "".join(self.text), self._count("prompt_tokens"), completion, self.chunks,
                     None if self.first is None else self.first - self.sent, rate, time.monotonic() - self.sent)


def send(base: str, model: str, req: SmokeRequest, timeout: float, api_key: str | None = None,
         cancel: threading.Event | None = None, extra: dict | None = None) -> Reply:
    """One request to `base` (http://host:port), streamed; never raises for what the server does."""
    path, body = body_of(req, model, extra)
    sent = time.monotonic()
    stream = _Stream(req.kind, sent)
    try:
        answer = request(base + path, body, sent + timeout, api_key=api_key, on_event=stream.event, cancel=cancel)
    except HttpFailure as e:
        why = f"no whole answer within {timeout:g} s" if e.timed_out else str(e)
        return Reply(req, None, why, "".join(stream.text), seconds=time.monotonic() - sent)
    if answer.status != 200:
        return Reply(req, answer.status, error_text(answer.body), seconds=time.monotonic() - sent)
    if not stream.chunks and answer.body:  # a server that ignored "stream": a whole JSON answer
        stream.event(answer.body.decode("utf-8", "replace"))
        if req.kind == "chat":
            _whole_chat(stream, answer.body)
    if stream.error is not None and not stream.chunks:
        return Reply(req, answer.status, f"an error object with HTTP 200: {stream.error}",
                     seconds=time.monotonic() - sent)
    return stream.reply(req, answer.status)


def _whole_chat(stream: _Stream, body: bytes) -> None:
    try:
        msg = json_of(body)["choices"][0]["message"]
        text = "".join(p for p in (msg.get("reasoning_content"), msg.get("content")) if isinstance(p, str))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return
    if text:
        stream.text.append(text)
        stream.chunks += 1


def run_all(base: str, model: str, requests: list[SmokeRequest], timeout: float, api_key: str | None = None,
            cancel: threading.Event | None = None, progress=None) -> list[Reply]:
    """The requests in order; after one without an answer (the server died or hung) the rest are not sent."""
    out = []
    for req in requests:
        if progress is not None:
            progress(req)
        r = send(base, model, req, timeout, api_key, cancel)
        out.append(r)
        if r.status is None or (cancel is not None and cancel.is_set()):
            break
    return out


@dataclass(frozen=True)
class Target:
    """One server to smoke-test: how findings name it, its base URL, the model name to ask for, the requests."""

    where: str
    base: str
    model: str
    requests: tuple[SmokeRequest, ...]


class SmokeRun:
    """run_all over `targets`, one after the other, in a thread: the supervisor's loop polls `done` and reads
    `results` ((target, replies) in order; a target whose server stopped answering ends the run)."""

    def __init__(self, targets: list[Target], timeout: float, api_key: str | None = None):
        self.cancel = threading.Event()
        self.results: list[tuple[Target, list[Reply]]] = []
        self.started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(targets, timeout, api_key),
                                        name="kt-launch smoke", daemon=True)
        self._thread.start()

    def _run(self, targets, timeout, api_key) -> None:
        try:
            for t in targets:
                if self.cancel.is_set():
                    break
                replies = run_all(t.base, t.model, list(t.requests), timeout, api_key, self.cancel)
                self.results.append((t, replies))
                if replies and replies[-1].status is None:  # a server died or hung: the supervisor stops
                    break
        finally:
            self._done.set()

    @property
    def replies(self) -> list[Reply]:
        """Every reply, in order (one target: its replies)."""
        return [r for _, replies in self.results for r in replies]

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def stop(self, wait: float = 2.0) -> None:
        self.cancel.set()
        self._done.wait(wait)
