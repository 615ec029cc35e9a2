"""The smoke test's types (no I/O): what is asked of a started server, and what came back.

resolve/smoke.py builds the requests and judges the replies (pure); run/smoke.py sends them (I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SMOKE_MODES = ("off", "warn", "on")  # --smoke: off, warn (a warning, keep serving), on (stop, EXIT_SMOKE)
EXIT_SMOKE = 4  # --smoke on: a smoke request failed, the server was stopped (documented in the README)


@dataclass(frozen=True)
class SmokeRequest:
    name: str  # how findings name it: "request 1 (chat, temperature 0)"
    kind: Literal["chat", "completion"]  # /v1/chat/completions, or /v1/completions for a model without a template
    prompt: str
    max_tokens: int
    longer_than: int | None = None  # the layerwise-prefill request: its prompt must exceed this many tokens


@dataclass(frozen=True)
class Reply:
    """One request's outcome. `status` None: no HTTP answer (refused, reset, the deadline passed; `error` says)."""

    request: SmokeRequest
    status: int | None = None
    error: str = ""  # a transport problem, or the server's message (a non-200 answer, or an error object with 200)
    text: str = ""  # content (and reasoning_content) as streamed
    prompt_tokens: int | None = None  # usage, as the server reported it (None: not reported)
    completion_tokens: int | None = None
    chunks: int = 0  # stream events that carried text
    ttft_s: float | None = None  # request sent -> first text
    decode_tok_s: float | None = None  # (completion_tokens - 1) / (last text - first text)
    seconds: float = 0.0  # the whole request
