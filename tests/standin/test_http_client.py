"""run/http.py against hostile servers: a stream line of megabytes, a server that trickles bytes for ever, one that
closes at once, a chunked answer cut in odd places. Each ends with a message within its deadline, never a hang or
a memory blow-up."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from kt_launch.core.smoke import SmokeRequest
from kt_launch.run.http import HttpFailure, request
from kt_launch.run.smoke import send
from operate.support import no_hang

REQ = SmokeRequest("request 1 (chat, temperature 0)", "chat", "q", 8)


def serve(handler):
    """A one-connection-at-a-time raw TCP server on a free loopback port; returns (url, stop)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    lst.settimeout(0.2)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = lst.accept()
            except OSError:
                continue
            try:
                conn.recv(65536)
                handler(conn, stop)
            except OSError:
                pass
            finally:
                conn.close()
        lst.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{lst.getsockname()[1]}", stop


SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"


def huge_line(conn, stop):
    conn.sendall(SSE + b"data: " + b"x" * (3 << 20))


def trickle(conn, stop):
    conn.sendall(SSE)
    while not stop.is_set():
        conn.sendall(b"d")
        time.sleep(0.05)


def close_at_once(conn, stop):
    pass


def chunked(conn, stop):
    events = (b'data: {"choices": [{"index": 0, "delta": {"content": "Paris"}}]}\n\n'
              b'data: {"choices": [{"index": 0, "delta": {"content": " is the capital."}}]}\n\n'
              b'data: {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}\n\ndata: [DONE]\n\n')
    body = b""
    for i in range(0, len(events), 7):  # 7-byte chunks, sent in pieces that split sizes and CRLFs
        piece = events[i:i + 7]
        body += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    body += b"0\r\n\r\n"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), 5):
        conn.sendall(body[i:i + 5])
        time.sleep(0.001)


@pytest.mark.parametrize("handler,what", [(huge_line, "an event line longer than"),
                                          (trickle, "no whole answer within 0.5 s"),
                                          (close_at_once, "closed the connection without an answer")])
def test_a_hostile_server_is_a_message_within_the_deadline(handler, what):
    url, stop = serve(handler)
    try:
        r = no_hang(lambda: send(url, "m", REQ, 0.5), 20)  # a hang fails the test instead of stalling the suite
    finally:
        stop.set()
    assert r.status is None and what in r.error, r.error


def test_chunked_stream_is_decoded_as_it_arrives():
    url, stop = serve(chunked)
    try:
        r = send(url, "m", REQ, 10.0)
    finally:
        stop.set()
    assert (r.status, r.text, r.prompt_tokens, r.completion_tokens, r.chunks) == (200, "Paris is the capital.", 9, 4,
                                                                                  2)


def test_cancel_ends_a_request_at_once():
    url, stop = serve(trickle)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    try:
        with pytest.raises(HttpFailure, match="cancelled"):  # the deadline is 60 s away: only the cancel ends it
            no_hang(lambda: request(url + "/v1/chat/completions", {}, time.monotonic() + 60, on_event=lambda e: None,
                                    cancel=cancel), 20)
    finally:
        stop.set()


# -- red team 5: what a server answers is data to judge, never a crash -------------------------------------------

def _answer(body: bytes, ctype: bytes = b"application/json", status: bytes = b"200 OK"):
    def handler(conn, stop):
        conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
    return handler


def _raw(data: bytes):
    def handler(conn, stop):
        conn.sendall(data)
    return handler


def endless(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"x" * 65536)


def endless_events(conn, stop):
    conn.sendall(SSE)
    event = b'data: {"choices": [{"delta": {"content": "' + b"word " * 2000 + b'"}}]}\n\n'
    while not stop.is_set():
        conn.sendall(event)


HOSTILE = {
    "events that are not completions": (_raw(SSE + b'data: {not json\n\ndata: {"choices": 5}\n\n'
                                             b'data: {"choices": [{"delta": 7}], "usage": {"completion_tokens": "x"}}'
                                             b'\n\ndata: ' + b"[" * 100_000 + b"\n\n"), "empty text"),
    "a body nested 100000 deep": (_answer(b"[" * 100_000 + b"]" * 100_000), "empty text"),
    "an error object with HTTP 200": (_answer(b'{"object": "error", "message": "model not loaded", "code": 400}'),
                                      "an error object with HTTP 200: model not loaded"),
    "an error event in the stream": (_raw(SSE + b'data: {"error": {"message": "out of memory"}}\n\n'),
                                     "an error object with HTTP 200"),
    "a status of 5000 digits": (_raw(b"HTTP/1.1 " + b"9" * 5000 + b" X\r\n\r\n"), "not an HTTP answer"),
    "a Unicode-digit Content-Length": (_raw(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n{}"), "empty text"),
    "a 1 GB body": (endless, "an answer longer than"),
    "text that is not UTF-8": (_raw(SSE + b'data: {"choices": [{"delta": {"content": "\xff\xfe\xc3"}}]}\n\n'
                                     b"data: \xff\xff\n\n"), "U+FFFD"),
    "a chunked stream cut mid-event": (_raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
                                            b'chunked\r\n\r\n20\r\ndata: {"choices": [{"delta": {"con'), "cut off"),
    "a redirect loop": (_answer(b"", status=b"302 Found\r\nLocation: /v1/chat/completions"), "HTTP 302"),
}


@pytest.mark.parametrize("label", sorted(HOSTILE))
def test_a_hostile_answer_is_judged_with_a_reason(label):
    from kt_launch.resolve.smoke import judge

    handler, what = HOSTILE[label]
    url, stop = serve(handler)
    try:
        r = no_hang(lambda: send(url, "m", REQ, 5.0), 20)
    finally:
        stop.set()
    why = judge(r)
    assert why is not None and what in why, (label, why)


def test_server_facts_keep_numbers_and_cut_strings():
    """bench's setup line shows what /server_info says: a megabyte 'model name' is cut, lists, objects and booleans
    are dropped (they are no setup figure)."""
    from kt_launch.run.bench import MAX_FACT, server_facts

    doc = b'{"served_model_name": "' + b"m" * (1 << 20) + b'", "tp_size": 2, "kt_method": "FP8", "x": [1, 2], ' \
          b'"y": {"z": 1}, "enable_x": true}'
    url, stop = serve(_answer(doc))
    try:
        got = no_hang(lambda: server_facts(url, None), 20)
    finally:
        stop.set()
    assert got == {"served_model_name": "m" * MAX_FACT, "tp_size": 2, "kt_method": "FP8"}, \
        {k: str(v)[:40] for k, v in got.items()}


KEY = 'sk-test-"key\\-0123456789'


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_that_echoes_the_api_key_never_gets_it_printed(stream):
    import json

    echoed = json.dumps({"error": {"message": f"invalid api key {KEY}"}}).encode()
    if stream:
        handler = _raw(SSE + b'data: {"choices": [{"delta": {"content": ' + json.dumps(f"key {KEY} ok").encode()
                       + b'}}]}\n\n')
    else:
        handler = _answer(echoed, status=b"401 Unauthorized")
    url, stop = serve(handler)
    try:
        r = no_hang(lambda: send(url, "m", REQ, 5.0, api_key=KEY), 20)
    finally:
        stop.set()
    shown = r.error + r.text
    assert "***" in shown and KEY not in shown and json.dumps(KEY)[1:-1] not in shown, shown


def test_an_endless_stream_of_events_is_cut_at_the_stream_limit(monkeypatch):
    """Events that never end (each one valid, well within the deadline) stop at MAX_STREAM, not at memory's end
    (the limit made small here, so the test is fast)."""
    import kt_launch.run.http as http

    monkeypatch.setattr(http, "MAX_STREAM", 1 << 20)
    url, stop = serve(endless_events)
    try:
        r = no_hang(lambda: send(url, "m", REQ, 30.0), 20)
    finally:
        stop.set()
    assert r.status is None and "an event stream longer than 1048576 bytes" in r.error, r.error
