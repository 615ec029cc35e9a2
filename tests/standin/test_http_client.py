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
