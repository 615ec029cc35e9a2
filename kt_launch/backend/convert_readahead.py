"""Reads a conversion's source ahead of the worker's reader, in a process of its own, so the disk never waits.

Started by convert_worker.py (``python convert_readahead.py``, the standard library only) before it imports torch
and kt-kernel. It reads the layers' expert byte ranges in the order they will be converted, sequentially, in large
blocks, as `cat` does (the disk's figure the conversion is measured against), into the page cache; the worker's
reader then copies them from the cache into its stacks.

Why a process and not a thread of the worker: kt-kernel 0.7.2's ``CPUInfer.sync`` is bound without releasing the GIL,
and torch's and kt-kernel's imports hold it for seconds; a thread would stop each time, and the disk with it (measured
on the AMX host: the reader took 25.3 s beside the quantizer, 19.6 s alone). Here nothing else runs.

Why paced: the page cache is memory too. The worker tells it, one line a layer, how many bytes of the list the reader
has begun on; this process stays at most ``ahead`` bytes beyond that (the launcher sizes it from the RAM left over
by the conversion's bound). It ends at the end of the list or when its stdin closes (the worker ended: it reads at
most ``ahead`` bytes more, then sees the end). Nothing here is an error: whatever cannot be read is left to the
reader, which says what is wrong.

Protocol on stdin: one JSON line ``{"steps": [[path, offset, length], ...], "ahead": bytes}``, then lines holding
one integer each, the reader's position in the list's bytes.
"""

from __future__ import annotations

import json
import os
import stat
import sys

BLOCK = 8 << 20  # bytes a read: large sequential requests, the kernel's readahead keeps the queue full


def run(stdin, steps, ahead: int) -> int:
    """Read `steps` ahead of the positions `stdin` gives; the bytes read."""
    buf = memoryview(bytearray(BLOCK))
    begun = done = 0  # the reader's position; the bytes this process has read, both counted along the list
    fd, at = None, None
    try:
        for path, off, n in steps:
            if path != at:
                if fd is not None:
                    os.close(fd)
                fd, at = os.open(path, os.O_RDONLY | os.O_NONBLOCK), path  # a FIFO put there: no wait
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # only regular files are read ahead
                    return done
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            end = off + n
            while off < end:
                want = min(BLOCK, end - off)
                while done + want > begun + ahead:  # far enough ahead: wait for the reader
                    line = stdin.readline()
                    if not line:
                        return done
                    begun = max(begun, int(line))
                got = os.preadv(fd, [buf[:want]], off)
                if got <= 0:
                    return done
                off += got
                done += got
    except (OSError, ValueError):
        return done
    finally:
        if fd is not None:
            os.close(fd)
    return done


def main() -> None:
    stdin = sys.stdin.buffer
    try:
        spec = json.loads(stdin.readline())
        steps = [(str(p), int(o), int(n)) for p, o, n in spec["steps"]]
        ahead = int(spec["ahead"])
    except (ValueError, KeyError, TypeError):
        return
    run(stdin, steps, ahead)


if __name__ == "__main__":
    main()
