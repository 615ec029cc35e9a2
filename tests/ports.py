"""Ports for servers a test starts in another process (kt-launch, a stand-in SGLang, the router).

A port found free with bind(port 0) is a port the kernel hands out again: to the next bind(0) and to every
outgoing connection another xdist worker makes, so it can be taken between the check and the server's own bind
("Address already in use"). These ports come from below the kernel's ephemeral range, which it never assigns on
its own, and each xdist worker draws from its own slice, so two workers never pick the same one.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

_LOW, _HIGH = 10000, 32000  # below Linux's default ephemeral range (32768-60999) and above the well-known ports
_SLICE = 2000


def _worker_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = _LOW + (index * _SLICE) % (_HIGH - _LOW)
    return range(start, start + _SLICE)


_candidates = list(_worker_slice())
random.Random(os.getpid()).shuffle(_candidates)
_next = itertools.cycle(_candidates)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive free loopback ports in this worker's slice."""
    for _ in range(_SLICE):
        base = next(_next)
        if all(_free(base + k) for k in range(count)):
            return base
    raise AssertionError("no free block of ports on loopback")


def free_port() -> int:
    return free_ports(1)
