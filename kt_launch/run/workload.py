"""The calibration workload against a ready server: start SGLang's expert-distribution recorder, send the chat
requests, dump the recorder (sglang-kt 0.7.2 entrypoints/http_server.py: POST /start_expert_distribution_record,
POST /dump_expert_distribution_record; the dump is written by rank 0 into SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR).

Runs in the supervisor's after-ready thread (run/supervise.py SuperviseOptions.after_ready): plain blocking HTTP with
a deadline per request, progress on stderr. Returns kt-launch's exit code: 0 when the dump was asked for and at
least one request was answered.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from kt_launch.run.http import HttpFailure, error_text, json_of, request


@dataclass
class WorkloadResult:
    sent: int = 0
    answered: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    dumped: bool = False


def _post(url: str, body: dict | None, timeout: float, api_key: str | None) -> tuple[int, bytes]:
    """POST through run/http.py, the one HTTP client of smoke, bench and calibrate (bounded sizes, one deadline)."""
    a = request(url, body or {}, time.monotonic() + timeout, api_key=api_key)
    return a.status, a.body


def _why(e: BaseException) -> str:
    return str(e)[:200]


def _recorder(base: str, route: str, timeout: float, api_key: str | None, result: WorkloadResult,
              say: Callable[[str], None], hint: str = "") -> bool:
    """POST /<route> of the expert-distribution recorder; False (the error said and kept) when it did not answer 200."""
    try:
        status, body = _post(f"{base}/{route}", None, timeout, api_key)
    except HttpFailure as e:
        result.errors.append(f"POST /{route}: {_why(e)}")
        say(f"kt-launch: error: {result.errors[-1]}\n")
        return False
    if status != 200:
        result.errors.append(f"POST /{route} answered HTTP {status}: {error_text(body)}")
        say(f"kt-launch: error: {result.errors[-1]}{hint}\n")
        return False
    return True


def run_workload(base: str, model: str, prompts: list[list[dict[str, str]]], requests: int, max_tokens: int,
                 timeout: float, api_key: str | None, result: WorkloadResult,
                 say: Callable[[str], None] = lambda s: sys.stderr.write(s)) -> int:
    """Record the expert distribution of `requests` chat requests (cycling through `prompts`)."""
    if not _recorder(base, "start_expert_distribution_record", timeout, api_key, result, say,
                     " (was the server started with --expert-distribution-recorder-mode?)"):
        return 1
    for i in range(requests):
        msgs = prompts[i % len(prompts)]
        result.sent += 1
        try:
            status, body = _post(f"{base}/v1/chat/completions", {"model": model, "messages": msgs,
                                                                "max_tokens": max_tokens, "temperature": 0.7},
                                 timeout, api_key)
        except HttpFailure as e:
            result.errors.append(f"request {i + 1}: {_why(e)}")
            say(f"kt-launch: calibrate: request {i + 1}/{requests} failed: {_why(e)}\n")
            continue
        if status != 200:
            result.errors.append(f"request {i + 1}: HTTP {status}")
            say(f"kt-launch: calibrate: request {i + 1}/{requests} answered HTTP {status}\n")
            continue
        result.answered += 1
        doc = json_of(body)
        usage = doc.get("usage") if isinstance(doc, dict) else None
        n = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            result.completion_tokens += n
        say(f"kt-launch: calibrate: request {i + 1}/{requests} answered\n")
    if not _recorder(base, "dump_expert_distribution_record", timeout, api_key, result, say):
        return 1
    result.dumped = True
    if not result.answered:
        say("kt-launch: error: no request of the workload was answered; the recorded counts would be empty\n")
        return 1
    return 0
