"""The smoke test's judge (resolve/smoke.py): strict enough for the broken outputs of the field threads
(kvcache-ai/ktransformers #1565 repeats, #1577 "bbbb", #1816 gibberish above the layerwise threshold, #1971 "&#",
#2001 all-zero tokens, #2076 corrupt at TP4), loose enough for any sane answer: short ones, code, lists, tables,
numbers, CJK and other scripts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from kt_launch.core.smoke import Reply, SmokeRequest
from kt_launch.resolve.smoke import degenerate, judge, smoke_findings, smoke_requests, summary, too_short

GOOD = [
    "4", "Paris.", "The capital of France is Paris.", "Yes", "No.", "42", "3.14159", "-1", "OK", "Hi!",
    "Paris is the capital of France.",
    "<think>\nThe user asks for the capital of France. That is Paris.\n</think>\n\nThe capital of France is Paris.",
    "```python\ndef add(a, b):\n    return a + b\n```",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    "x = [1, 2, 3]\ny = {k: v for k, v in zip(x, x)}",
    "1. Paris\n2. Lyon\n3. Marseille\n4. Toulouse",
    "- apples\n- pears\n- plums\n- cherries",
    "| city | people |\n|---|---|\n| Paris | 2.1M |\n| Lyon | 0.5M |",
    "法国的首都是巴黎。",
    "フランスの首都はパリです。",
    "프랑스의 수도는 파리입니다.",
    "Столица Франции — Париж.",
    "Η πρωτεύουσα της Γαλλίας είναι το Παρίσι.",
    "عاصمة فرنسا هي باريس.",
    "Paris (French: Paris; Russian: Париж; Greek: Παρίσι; Japanese: パリ)",
    "2 + 2 = 4",
    "The answer is 1,000,000.",
    "Great question! 🎉 Paris.",
    "1 1 2 3 5 8 13 21 34 55",
    "Sure. Here it is: a, b, c, d, e, f, g.",
    "...",
    "0",
    "The word 'the' is the most common word in English, and the sentence shows it.",
    "$$E = mc^2$$",
    "SELECT name FROM cities WHERE country = 'France' ORDER BY population DESC LIMIT 1;",
]

BAD = [
    ("", "empty text"),
    ("   \n ", "only white space"),
    ("b" * 48, "one character repeated"),
    ("bbbb bbbb bbbb bbbb", "one character repeated"),
    ("!" * 32, "one character repeated"),  # token id 0 of Qwen's vocabulary, #2001
    ("&#" * 24, "a loop"),  # #1971
    ("the the the the the the the the the the", "one token repeated"),
    ("Paris is " * 12, "a loop"),
    ("The capital of France is Paris. " + "Paris Paris Paris " * 6, "one token repeated"),
    ("The capital of France is" + " of the" * 16, "a loop"),  # #1565: a good start, then repeating
    ("abc\x00\x00def", "control character"),
    ("\x1b[31mred\x1b[0m", "control character"),
    ("ok \ufffd\ufffd\ufffd\ufffd\ufffd", "U+FFFD"),
    ("Ж§¤ÿ░▒ψ₪ঃ¤░▒§¤ÿ₪", "junk"),
    ("ЖaψbঃcЖdψeঃf ЖgψhঃiЖj", "junk"),
    ("\U000f0000\U000f0001\U000f0002\U000f0003 \U000f0004\U000f0005\U000f0006\U000f0007", "junk"),
]


@pytest.mark.parametrize("text", GOOD)
def test_a_sane_answer_passes(text):
    assert degenerate(text) is None


@pytest.mark.parametrize("text,what", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_a_broken_answer_is_caught_and_named(text, what):
    got = degenerate(text)
    assert got is not None and what in got, got


WORDS = ["Paris", "is", "the", "capital", "of", "France", "river", "Seine", "city", "and", "a", "in", "2", "42",
         "巴黎", "首都", "Париж", "code", "x", "=", "1", "(", ")", ".", ",", "-", "\n", "def", "return", "lists"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=60, unique=True))
def test_text_of_distinct_words_is_never_degenerate(words):
    """Whatever a model writes without repeating itself passes (unique words in any order, any script mix)."""
    text = " ".join(words)
    if text.strip():
        assert degenerate(text) is None, text


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([w for w in WORDS if w.strip()]), st.integers(min_value=8, max_value=60))
def test_one_word_repeated_is_always_caught(word, n):
    assert degenerate(" ".join([word] * n)) is not None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=1).filter(
    lambda c: not c.isspace()), st.integers(min_value=6, max_value=80))
def test_one_character_repeated_is_always_caught(ch, n):
    assert degenerate(ch * n) is not None


REQ = SmokeRequest("request 1 (chat, temperature 0)", "chat", "q", 48)


def test_judge_reads_status_usage_and_text():
    assert judge(Reply(REQ, 200, text="Paris.", completion_tokens=2)) is None
    assert judge(Reply(REQ, 200, text="Paris.", completion_tokens=None)) is None  # no usage reported: the text
    assert "completion_tokens 0" in judge(Reply(REQ, 200, text="", completion_tokens=0))
    assert judge(Reply(REQ, 500, error="boom")) == "HTTP 500: boom"
    assert judge(Reply(REQ, None, error="no whole answer within 5 s")) == "no whole answer within 5 s"
    assert "one character repeated" in judge(Reply(REQ, 200, text="!!!!!!!!", completion_tokens=8))


def test_findings_name_request_code_and_carry_the_log_tail():
    replies = [Reply(REQ, 200, text="Paris.", completion_tokens=2),
               Reply(SmokeRequest("request 2 (the same chat again)", "chat", "q", 48), None,
                     error="the server closed the connection without an answer")]
    (f,) = smoke_findings(replies, "http://127.0.0.1:1", ["line a", "Rank 0 scheduler is dead"])
    assert (f.level, f.code) == ("error", "KT-E560") and "request 2 (the same chat again)" in f.message
    assert f.field("request") == "request 2 (the same chat again)" and f.field("log_tail").endswith("dead")
    (w,) = smoke_findings([Reply(REQ, 200, text="", completion_tokens=0)], "u", fail=False)
    assert (w.level, w.code) == ("warning", "KT-W561")
    (g,) = smoke_findings([Reply(REQ, 200, text="b" * 9, completion_tokens=9)], "u")
    assert g.code == "KT-E562" and g.field("log_tail") is None


def test_requests_follow_the_template_and_the_threshold():
    two = smoke_requests(True, None)
    assert [r.kind for r in two] == ["chat", "chat"] and two[0].prompt == two[1].prompt
    three = smoke_requests(False, 500)
    assert [r.kind for r in three] == ["completion"] * 3 and three[2].longer_than == 500
    assert len(three[2].prompt.split()) > 500 + 64
    assert "kt.gpu_prefill_token_threshold 500" in three[2].name
    short = Reply(three[2], 200, text="Paris.", prompt_tokens=400, completion_tokens=2)
    assert [f.code for f in too_short([short])] == ["KT-W563"]
    assert too_short([Reply(three[2], 200, text="Paris.", prompt_tokens=700, completion_tokens=2)]) == []


def test_summary_gives_the_warm_requests_figures():
    r1 = Reply(REQ, 200, text="a", ttft_s=1.5, decode_tok_s=10.0)
    r2 = Reply(SmokeRequest("request 2 (the same chat again)", "chat", "q", 48), 200, text="a", ttft_s=0.25,
               decode_tok_s=20.0)
    assert summary([r1, r2]) == "2 request(s) passed; TTFT 0.25 s, decode 20.0 tok/s (request 2)"
