"""Files kt-launch writes where the user says (issue 23 item 14 and a smaller one): `init -o` and `schema -o` never wait
on a FIFO nobody reads, and `init -o` never writes over a file of the model or an adapter, --force or not."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from devtools import synthetic

REPO = Path(__file__).resolve().parents[2]


def kt(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "kt_launch", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture
def demo(tmp_path):
    root = tmp_path / "demo"
    synthetic.demo(root)
    return root


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_nobody_reads_is_refused_at_once(tmp_path, demo, host_file):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    for argv in (("schema", "-o", fifo), ("init", demo / "model", "-o", fifo, "--force", "--host-facts", host_file)):
        r = kt(*argv, timeout=30)  # it used to wait here for a reader forever
        assert r.returncode == 2 and "FIFO that no process reads" in r.stderr and str(fifo) in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_that_is_read_and_a_character_device_are_written(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = kt("schema", "-o", fifo, timeout=30)
    reader.join(30)
    assert r.returncode == 0 and got and got[0] == kt("schema").stdout.encode(), r.stderr
    assert kt("schema", "-o", os.devnull).returncode == 0


def test_a_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
        r = kt("schema", "-o", path, timeout=30)
    finally:
        s.close()
    assert r.returncode == 2 and "socket" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_init_never_writes_over_a_file_of_the_model(tmp_path, demo, host_file):
    model = demo / "model"
    lora = tmp_path / "lora"
    synthetic.peft_lora(lora)
    link = tmp_path / "link.yaml"
    link.symlink_to(model / "config.json")
    before = {p: p.read_bytes() for p in (model / "config.json", lora / "adapter_config.json")}
    for out, extra in ((model / "config.json", ()), (link, ()), (lora / "adapter_config.json", ("--lora", lora))):
        r = kt("init", model, *extra, "-o", out, "--force", "--host-facts", host_file)
        assert r.returncode == 2 and "never writes over" in r.stderr and str(out) in r.stderr, r.stderr
    assert {p: p.read_bytes() for p in before} == before
    r = kt("init", model, "-o", tmp_path / "my.yaml", "--host-facts", host_file)  # beside it: written
    assert r.returncode in (0, 3) and (tmp_path / "my.yaml").is_file(), r.stderr
