"""`kt-launch bench`'s I/O: prompts of a given token length, one request at a time (or N at once), streamed so TTFT
and decode tok/s are measured as run/smoke.py measures them.

Prompt length: counted with the server's own tokenizer through POST /tokenize (sglang and sglang-kt have it) when
it answers, adjusting the word count until the prompt is within 1 % under the target; otherwise estimated from
the tokens per word the server reported (usage.prompt_tokens) for the previous request, starting at one token
per word. Either way each row reports the prompt tokens the server counted. Each request starts with its own
run id, so no prompt shares a prefix with an earlier one (SGLang's radix cache would skip its prefill)."""

from __future__ import annotations

import random
import threading
import time

from kt_launch.core.smoke import Reply, SmokeRequest
from kt_launch.run.http import HttpFailure, json_of, request
from kt_launch.run.smoke import send

_WORDS = ("time year people way day man thing woman life child world school state family student group country "
          "problem hand part place case week company system program question work government number night point "
          "home water room mother area money story fact month lot right study book eye job word business issue "
          "side kind head house service friend father power hour game line end member law car city community name "
          "president team minute idea kid body information back parent face others level office door health person "
          "art war history party result change morning reason research girl guy moment air teacher force education "
          "river garden market bridge winter summer music letter window paper table road field train island forest "
          "mountain ocean village engine silver copper orange yellow purple green simple quiet early late strong "
          "small large bright dark heavy light warm cold happy careful honest gentle brave clever ancient modern").split()


def words(n: int, seed: str) -> str:
    rnd = random.Random(seed)
    return " ".join(rnd.choice(_WORDS) for _ in range(n))


def count_tokens(base: str, model: str, text: str, deadline: float, api_key: str | None) -> int | None:
    """The server's own token count of `text` (POST /tokenize), or None when it has no such route."""
    try:
        a = request(base + "/tokenize", {"model": model, "prompt": text, "add_special_tokens": True}, deadline,
                    api_key=api_key)
        doc = json_of(a.body) if a.status == 200 else None
    except (HttpFailure, ValueError):
        return None
    n = doc.get("count") if isinstance(doc, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


class Prompts:
    """Prompts of about `target` tokens: tokenizer-counted when /tokenize answers, else scaled by the last usage."""

    def __init__(self, base: str, model: str, api_key: str | None):
        self.base, self.model, self.api_key = base, model, api_key
        self.per_word = 1.0  # tokens per word, learnt
        self.tokenize: bool | None = None  # None: not tried yet

    @property
    def how(self) -> str:
        return "tokenize" if self.tokenize else "usage"

    def make(self, target: int, run_id: str) -> str:
        head = f"Run {run_id}. Read the words below, then write a short story that uses some of them.\n"
        n = max(1, int((target - 24) / self.per_word))
        text = head + words(n, run_id)
        if self.tokenize is False:
            return text
        for _ in range(4):
            got = count_tokens(self.base, self.model, text, time.monotonic() + 60, self.api_key)
            if got is None:
                self.tokenize = self.tokenize or False
                return text
            self.tokenize = True
            self.per_word = max(0.2, (got - 24) / n) if n else self.per_word
            if 0.99 * target <= got <= target:
                return text
            n = max(1, int(n * target / got) - (1 if got > target else 0))
            text = head + words(n, run_id)
        return text

    def learn(self, reply: Reply, text: str) -> None:
        if not self.tokenize and reply.prompt_tokens:
            self.per_word = max(0.2, reply.prompt_tokens / max(1, len(text.split())))


def run_length(base: str, model: str, prompts: Prompts, length: int, concurrency: int, output_tokens: int,
               timeout: float, api_key: str | None, seq: int) -> tuple[list[Reply], float]:
    """`concurrency` requests of `length` input tokens at once (1: one at a time); the replies and the wall time."""
    texts = [prompts.make(length, f"{seq}-{i}-{time.time_ns() % 1_000_000}") for i in range(concurrency)]
    reqs = [SmokeRequest(f"{length} tokens #{i + 1}", "completion", t, output_tokens) for i, t in enumerate(texts)]
    out: list[Reply | None] = [None] * concurrency
    extra = {"ignore_eos": True}  # decode all output_tokens, as the tutorials' figures do

    def one(i: int) -> None:
        out[i] = send(base, model, reqs[i], timeout, api_key, None, extra)

    start = time.monotonic()
    if concurrency == 1:
        one(0)
    else:
        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 30)
    wall = time.monotonic() - start
    replies = [r if r is not None else Reply(reqs[i], None, "no answer") for i, r in enumerate(out)]
    for r, t in zip(replies, texts):
        prompts.learn(r, t)
    return replies, wall


def server_facts(base: str, api_key: str | None) -> dict:
    """What /server_info and /model_info say (sglang's server args: kt_method, tp_size, version, ...); {} when
    the server offers neither."""
    out: dict = {}
    for path in ("/model_info", "/server_info"):
        try:
            a = request(base + path, None, time.monotonic() + 10, api_key=api_key)
            doc = json_of(a.body) if a.status == 200 else None
        except HttpFailure:
            doc = None
        if isinstance(doc, dict):
            out.update({k: _fact(v) for k, v in doc.items() if _fact(v) is not None})
    return out


MAX_FACT = 200  # a server's value shown in the setup line: a megabyte-long "model name" is cut, not printed


def _fact(v):
    """One server fact as the setup may show it: a number, or a string cut to MAX_FACT; else None (dropped)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return v
    return v[:MAX_FACT] if isinstance(v, str) else None
