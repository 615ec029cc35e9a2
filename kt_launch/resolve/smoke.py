"""The smoke test's rules (pure): which requests a started server gets, and whether an answer is sane.

The rule (README "Smoke test"), per request: HTTP 200, `completion_tokens > 0` where the server reports usage, and
text (content plus reasoning_content) that is not degenerate:
  - empty or only white space;
  - control characters (other than tab, newline, carriage return), or U+FFFD (undecodable bytes) in more than
    one character in ten;
  - one character repeated (six or more, nothing else but white space): "bbbbbbbb", "!!!!!!";
  - one token making up 3/4 or more of at least 8 tokens ("the the the ...");
  - a loop: the text ends in a run of one unit of 1 to 8 tokens repeated 8 times or more, covering at least half
    of the tokens ("&#&#&#...", "Paris is Paris is ...");
  - junk: more than 3/10 of the non-space characters are non-ASCII symbols, private-use or unassigned code
    points, or the letters change script more than 1.5 times per word with at least 3 scripts (random token ids).
A token here is a word or one punctuation character (regex `\\w+|[^\\w\\s]`). Short answers ("4", "Paris."), code,
lists, tables, CJK text and numbers pass (tests/resolve/test_smoke.py holds both sides)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from kt_launch.core.findings import Finding, error, warning
from kt_launch.core.smoke import Reply, SmokeRequest

TOKEN = re.compile(r"\w+|[^\w\s]")
QUESTION = "What is the capital of France? Answer in one short sentence."
MAX_TOKENS = 48
# East Asian scripts mix within one sentence (kanji, kana, hangul): one group
_EAST_ASIAN = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "HALFWIDTH", "FULLWIDTH")


def smoke_requests(chat: bool, threshold: int | None) -> list[SmokeRequest]:
    """(1) one request at temperature 0, (2) the same again (the second-request crashes), (3) with
    kt.gpu_prefill_token_threshold set, a prompt longer than it (sglang-kt's layerwise prefill path)."""
    kind = "chat" if chat else "completion"
    prompt = QUESTION if chat else "Question: " + QUESTION + "\nAnswer:"
    out = [SmokeRequest(f"request 1 ({kind}, temperature 0)", kind, prompt, MAX_TOKENS),
           SmokeRequest(f"request 2 (the same {kind} again)", kind, prompt, MAX_TOKENS)]
    if threshold is not None and threshold > 0:
        out.append(SmokeRequest(f"request 3 ({kind}, a prompt longer than kt.gpu_prefill_token_threshold "
                                f"{threshold})", kind, long_prompt(threshold + 64, chat), MAX_TOKENS,
                                longer_than=threshold))
    return out


_FACTS = ("The river Seine flows through Paris and reaches the sea at Le Havre.",
          "Lyon lies where the Rhone and the Saone meet.",
          "Marseille is the oldest city of France and a large port on the Mediterranean.",
          "Bordeaux is known for its wine and its long stone quays.",
          "Strasbourg sits on the Rhine, near the border with Germany.")


def long_prompt(words: int, chat: bool) -> str:
    """A prompt of at least `words` words (any tokenizer counts at least one token per word), numbered facts
    that do not repeat verbatim, then the question."""
    parts, n = [], 0
    while n < words:
        fact = f"Note {len(parts) + 1}: {_FACTS[len(parts) % len(_FACTS)]}"
        parts.append(fact)
        n += len(fact.split())
    text = " ".join(parts) + "\n\n" + QUESTION
    return text if chat else "Question: " + text + "\nAnswer:"


# ---------------------------------------------------------------------------------------------------------
# The judge
# ---------------------------------------------------------------------------------------------------------

def _group(ch: str) -> str:
    name = unicodedata.name(ch, "")
    first = name.split(" ", 1)[0]
    return "EAST_ASIAN" if first in _EAST_ASIAN else first


def _loop(tokens: list[str]) -> tuple[str, int] | None:
    """The unit (1..8 tokens) the text ends repeating 8+ times over at least half its tokens, with its count."""
    n = len(tokens)
    for size in range(1, 9):
        if n < 8 * size:
            break
        unit = tokens[n - size:]
        reps, i = 1, n - 2 * size
        while i >= 0 and tokens[i:i + size] == unit:
            reps, i = reps + 1, i - size
        if reps >= 8 and reps * size * 2 >= n:
            return "".join(unit) if size == 1 else " ".join(unit), reps
    return None


def degenerate(text: str) -> str | None:
    """What makes `text` a broken model's output, or None for text a sane model could write."""
    if not text.strip():
        return "empty text" if not text else "only white space"
    controls = [c for c in text if unicodedata.category(c) == "Cc" and c not in "\t\n\r"]
    if controls:
        return f"{len(controls)} control character(s) ({', '.join(sorted({repr(c) for c in controls})[:3])})"
    if text.count("\ufffd") * 10 > len(text):
        return f"{text.count(chr(0xfffd))} of {len(text)} characters are U+FFFD (bytes that are not text)"
    solid = "".join(text.split())
    if len(solid) >= 6 and len(set(solid)) == 1:
        return f"one character repeated: {solid[0]!r} x {len(solid)}"
    tokens = TOKEN.findall(text)
    if len(tokens) >= 8:
        top, count = Counter(tokens).most_common(1)[0]
        if count * 4 >= len(tokens) * 3:
            return f"one token repeated: {top!r} is {count} of {len(tokens)} tokens"
        loop = _loop(tokens)
        if loop is not None:
            return f"a loop: {loop[0][:40]!r} repeated {loop[1]} times at the end"
    if len(solid) >= 8:
        odd = sum(1 for c in solid if ord(c) > 127 and unicodedata.category(c)[0] in "SC" or c == "\ufffd")
        if odd * 10 > len(solid) * 3:
            return f"junk: {odd} of {len(solid)} characters are symbols, private-use or unassigned"
        runs, groups, last = 0, set(), None
        for c in solid:
            if not c.isalpha():
                last = None
                continue
            g = _group(c)
            groups.add(g)
            if g != last:
                runs, last = runs + 1, g
        words = max(1, len(text.split()))
        if len(groups) >= 3 and runs * 2 > words * 3:
            return f"junk: letters of {len(groups)} scripts switching {runs} times in {words} word(s)"
    return None


def judge(reply: Reply) -> str | None:
    """What was wrong with one reply, or None when it passes."""
    if reply.status is None:
        return reply.error or "no answer"
    if reply.status != 200:
        return f"HTTP {reply.status}" + (f": {reply.error}" if reply.error else "")
    if reply.error:  # HTTP 200 with an error object instead of a completion
        return reply.error
    if reply.completion_tokens == 0:
        return "completion_tokens 0 (the server generated nothing)" + (f"; text {_quote(reply.text)}"
                                                                        if reply.text else "")
    bad = degenerate(reply.text)
    if bad:
        return f"{bad}; text {_quote(reply.text)}"
    return None


def _quote(text: str, limit: int = 80) -> str:
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


# ---------------------------------------------------------------------------------------------------------
# Findings and the summary
# ---------------------------------------------------------------------------------------------------------

_FIX = {
    "KT-E560": "read the server's log tail; a crash on the second request is known from kvcache-ai/ktransformers "
               "#1781 and #1570; `--smoke warn` keeps the server up to look into it",
    "KT-E561": "all-zero or empty generations (kvcache-ai/ktransformers #2001): check kt.method against the files "
               "in kt.weight_path with `kt-launch probe --profile P`",
    "KT-E562": "gibberish after a clean start (kvcache-ai/ktransformers #1577, #1816, #2076): compare with "
               "server.tp_size 1 and with kt.gpu_prefill_token_threshold unset; `kt-launch probe --profile P` "
               "checks the kt-kernel MoE layer against torch",
}
_WARN = {"KT-E560": "KT-W560", "KT-E561": "KT-W561", "KT-E562": "KT-W562"}


def _code(reply: Reply) -> str:
    if reply.status != 200 or reply.error:
        return "KT-E560"
    if reply.completion_tokens == 0 or not reply.text:
        return "KT-E561"
    return "KT-E562"


def smoke_findings(replies: list[Reply], where: str, tail: list[str] | None = None,
                   fail: bool = True) -> list[Finding]:
    """One finding per failed request: the request and what was wrong in the message, the server's log tail (when
    kt-launch has one) in the field `log_tail` (the supervisor prints it below the findings). `fail` False
    (--smoke warn): the warning twins."""
    out = []
    log = "\n".join(line[:2000] for line in tail[-12:]) if tail else None  # a log line may be a megabyte
    for r in replies:
        bad = judge(r)
        if bad is None:
            continue
        code = _code(r)
        make = error if fail else warning
        out.append(make(code if fail else _WARN[code], f"smoke test of {where}: {r.request.name} failed: {bad}",
                        _FIX[code], {"request": r.request.name, "url": where, "log_tail": log}))
    return out


def too_short(replies: list[Reply]) -> list[Finding]:
    """The long request's prompt, as the server counted it, did not exceed the threshold (the layerwise path was
    not tested)."""
    out = []
    for r in replies:
        t = r.request.longer_than
        if t is not None and r.status == 200 and r.prompt_tokens is not None and r.prompt_tokens <= t:
            out.append(warning("KT-W563", f"smoke test: {r.request.name}: the server counted {r.prompt_tokens} "
                               f"prompt tokens, not more than {t}: the layerwise prefill path was not tested",
                               "nothing to change in the profile; the server's tokenizer packs the prompt's words "
                               "tighter than one token each", {"request": r.request.name}))
    return out


def summary(replies: list[Reply]) -> str:
    """"3 requests passed; TTFT 0.21 s, decode 14.2 tok/s (request 2)": the warm request's figures."""
    if not replies:
        return "no requests"
    warm = replies[1] if len(replies) > 1 else replies[0]
    parts = []
    if warm.ttft_s is not None:
        parts.append(f"TTFT {warm.ttft_s:.2f} s")
    if warm.decode_tok_s is not None:
        parts.append(f"decode {warm.decode_tok_s:.1f} tok/s")
    what = f" (request {replies.index(warm) + 1})" if parts else ""
    return f"{len(replies)} request(s) passed" + ("; " + ", ".join(parts) + what if parts else "")


def replies_json(replies: list[Reply], unsent: list[SmokeRequest] | tuple = ()) -> list[dict]:
    """One row per answered request, then one per request `unsent` (not sent after one without an answer)."""
    return [_row(r.request, r) for r in replies] + [_row(req, None) for req in unsent]


def _row(req: SmokeRequest, r: Reply | None) -> dict:
    if r is None:
        return {"request": req.name, "kind": req.kind, "status": None, "ok": False, "problem": "not sent",
                "prompt_tokens": None, "completion_tokens": None, "ttft_s": None, "decode_tok_s": None,
                "seconds": None, "text": ""}
    problem = judge(r)
    return {"request": req.name, "kind": req.kind, "status": r.status, "ok": problem is None, "problem": problem,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "ttft_s": _round(r.ttft_s),
            "decode_tok_s": _round(r.decode_tok_s), "seconds": _round(r.seconds), "text": r.text[:400]}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
