"""The workload of `kt-launch calibrate`: a prompts file read through the bounded reader, or a small default set.

A file is JSONL when its name ends in .jsonl or its first non-blank line starts with `{` or `[`: each non-blank line
is then one JSON value, `{"messages": [...]}`, a list of chat messages (`{"role", "content"}`), `{"prompt": TEXT}`
or a JSON string. Any other file is plain text, one prompt a line. A line that is none of these is refused naming
its number (ReadError with `line`), never skipped.
"""

from __future__ import annotations

import os
from typing import Any

from kt_launch.facts.reader import Kind, ReadError, parse_json, read_bytes

PROMPTS = Kind("prompts file", 16 << 20, 16)
LINE = Kind("prompts file", 1 << 20, 16)
MAX_PROMPTS = 100_000
ROLES = ("system", "user", "assistant")

# A small mixed default: chat, code, maths, summary, translation, reasoning; different experts answer each.
DEFAULT = (
    "Explain how a hash map works and when it is slower than a balanced tree.",
    "Write a Python function that merges two sorted lists without using sort(), with a docstring and tests.",
    "Solve step by step: a train leaves at 09:40 at 84 km/h; a second one leaves the same station at 10:05 at "
    "110 km/h. When does the second catch up?",
    "Summarise the causes of the French Revolution in five bullet points.",
    "Translate into German and French: 'The meeting is moved to Thursday because the room is booked.'",
    "Write a short story (about 150 words) about a lighthouse keeper who finds a message in a bottle.",
    "What is the difference between TCP and UDP? Give one use case for each.",
    "Write a SQL query that returns the three customers with the highest total order value in 2025.",
)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _chat(value: Any, path: str, line: int) -> list[dict[str, str]]:
    def bad(why: str) -> ReadError:
        return ReadError(PROMPTS.what, path, f"line {line}: {why}", line)

    if isinstance(value, str):
        if not value.strip():
            raise bad("an empty prompt")
        return messages(value)
    if isinstance(value, dict):
        if "messages" in value:
            value = value["messages"]
        elif isinstance(value.get("prompt"), str):
            return _chat(value["prompt"], path, line)
        else:
            raise bad('an object without "messages" or "prompt"')
    if not isinstance(value, list) or not value:
        raise bad('not a prompt: give {"messages": [...]}, a list of messages, {"prompt": TEXT} or a string')
    out = []
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise bad(f"message {i + 1} is not {{\"role\": system|user|assistant, \"content\": TEXT}}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def read_prompts(path: str | os.PathLike) -> list[list[dict[str, str]]]:
    """The chat requests of a prompts file. Raises ReadError naming the file (and the line)."""
    p = os.fspath(path)
    data = read_bytes(p, PROMPTS)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReadError(PROMPTS.what, p, f"not UTF-8 (byte {e.start}); save it as UTF-8") from None
    lines = text.splitlines()
    first = next((ln.lstrip() for ln in lines if ln.strip()), "")
    jsonl = p.endswith(".jsonl") or first.startswith(("{", "["))
    out: list[list[dict[str, str]]] = []
    for n, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        if len(out) >= MAX_PROMPTS:
            raise ReadError(PROMPTS.what, p, f"more than {MAX_PROMPTS} prompts", n)
        if jsonl:
            try:
                value = parse_json(p, ln.encode("utf-8"), LINE)
            except ReadError as e:
                raise ReadError(PROMPTS.what, p, f"line {n}: {e.reason}", n) from None
            out.append(_chat(value, p, n))
        else:
            out.append(messages(ln))
    if not out:
        raise ReadError(PROMPTS.what, p, "holds no prompt")
    return out
