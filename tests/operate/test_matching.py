"""The supervisor's log matchers are linear on any line (issue 23, items 1 and 6), tested as a class:

- the shape rules refuse the patterns that backtrack (`a.*b`, nested repeats, unanchored repeats);
- on adversarial lines (hypothesis: fragments of every needle, `None`, error names, brackets, at any length up to
  1 MB), every regex call gets at most WINDOW characters, the whole-text passes get each byte once, and so the work
  per line is bounded whatever the line holds (steps counted, not time);
- the needle prefilter is sound: a line a pattern matches holds one of its needles;
- signatures match the real error line, not a dump of values: SGLang's `server_args=...` line with `None` before
  `kt_cpuinfer` explains nothing, kt-kernel 0.7.2's own `None // int` traceback does.
"""

from __future__ import annotations

import collections
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kt_launch.run import crashes, loop, matching
from kt_launch.run.matching import WINDOW, PatternShapeError, Rx, rx

ALL_RX: list[Rx] = list(loop._MATCHERS)


@pytest.mark.parametrize("pattern", [r"a.*b", r"(?:ab+)+c", r"x[^\n]*y", r"^(a*)*b", r"^a.*b",
                                     r"^(?>a*b*)c", r"[^\n]*"])
def test_backtracking_shapes_are_refused(pattern):
    with pytest.raises(PatternShapeError):
        rx(pattern)


@pytest.mark.parametrize("pattern", [r"plain literal|other one", r"^\s*+(?>[\w.]*?Error\b):",
                                     r"^(?>[^\n]*?foo)(?>[^\n]*?bar)"])
def test_linear_shapes_are_accepted(pattern):
    assert rx(pattern).needles


FRAGMENTS = sorted({n for r in ALL_RX for n in r.needles}
                   | {"None", "None, ", "NoneType", ", ", " ", "Error:", "TypeError: ", "Exception", "[", "]",
                      "kt_cpuinfer", "cpuinfer_threads", "=", ":", "numa", "bind", "fail", "\t", "x" * 50,
                      "server_args=ServerArgs(", "Traceback (most recent call last)", "é", "\u2028"})
lines_st = st.lists(st.sampled_from(FRAGMENTS), max_size=300).map("".join)


class Counting:
    """A compiled pattern that counts the characters each call is handed (the regex engine's input)."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls
        self.pattern, self.flags = inner.pattern, inner.flags

    def search(self, text, pos=0):
        self.calls.append(len(text) - pos)
        return self.inner.search(text, pos)


@pytest.fixture
def counted(monkeypatch):
    calls: list[int] = []
    bulk: list[int] = []
    for r in {id(r): r for r in ALL_RX + [s.pattern for s in crashes.SIGNATURES]
              + [s.after for s in crashes.SIGNATURES if s.after] + [p for p, _ in crashes.STAGES]}.values():
        object.__setattr__(r, "pattern", Counting(r.pattern, calls))  # Rx is frozen: undone below
    real_bulk = matching._bulk
    monkeypatch.setattr(matching, "_bulk", lambda r: Counting(real_bulk(r), bulk))
    yield calls, bulk
    for r in {id(r): r for r in ALL_RX + [s.pattern for s in crashes.SIGNATURES]
              + [s.after for s in crashes.SIGNATURES if s.after] + [p for p, _ in crashes.STAGES]}.values():
        if isinstance(r.pattern, Counting):
            object.__setattr__(r, "pattern", r.pattern.inner)


def _through_the_supervisor(text: str) -> None:
    """What the supervisor does with a server's output: tee, track (batches), then explain a death."""
    tracker = loop.PhaseTracker()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    tee = loop.Tee(set(), lambda d: None, tail, tracker)
    data = text.encode("utf-8", "surrogatepass")
    for i in range(0, len(data), 1 << 16):
        tee.feed(data[i:i + (1 << 16)])
    tee.feed(b"")
    crashes.explain([*tracker.kept, *tail], {}, None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(unit=lines_st, repeat=st.sampled_from([1, 7, 300, 4000]), lines=st.integers(1, 3))
def test_regex_work_is_bounded_per_line_on_adversarial_lines(counted, unit, repeat, lines):
    calls, bulk = counted
    calls.clear()
    bulk.clear()
    line = (unit * repeat)[:1_000_000]
    text = (line + "\n") * lines
    _through_the_supervisor(text)
    assert all(n <= WINDOW for n in calls), max(calls)  # no regex ever sees more than a window
    n_lines = text.count("\n") + text.count("\r") + text.count("\u2028") + len(text) // 65536 + 1
    # per line: each pattern at most a few times (the tracker, then explain over kept lines and the tail)
    assert len(calls) <= 6 * len(ALL_RX) * n_lines + 2 * 40 * len(ALL_RX)
    assert sum(bulk) <= 2 * len(text.encode("utf-8", "surrogatepass")) + 1  # whole-text passes: once a byte


@settings(max_examples=300, deadline=None)
@given(line=lines_st)
def test_the_needle_prefilter_is_sound(line):
    w = matching.window(line)
    low = w.lower()
    for r in ALL_RX + [s.after for s in crashes.SIGNATURES if s.after]:
        if r.pattern.search(w):
            assert any(n in low for n in r.needles), (r.pattern.pattern, w)
        assert bool(r.search(line)) == bool(r.pattern.search(w))


def test_a_megabyte_line_of_nones_and_a_flood_cost_no_per_line_regex(counted):
    calls, _ = counted
    calls.clear()
    _through_the_supervisor("None, " * 170_000 + "\n" + "[2026] plain start-up line, nothing known\n" * 100_000)
    assert len(calls) < 100


# -- issue 23 item 6: the real error line, not a dump of values ---------------------------------------------

SERVER_ARGS = ("server_args=ServerArgs(model_path='/m', tokenizer_path=None, lora_paths=None, kt_weight_path='/w', "
               "kt_method='AMXINT8', kt_cpuinfer=60, kt_threadpool_count=2, kt_num_gpu_experts=8, max_lora_rank=None)")


@pytest.mark.parametrize("then,code", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "KT-E547"),
    ("RuntimeError: Expected all tensors to be on the same device, but found cuda:0 and cpu!", "KT-E543"),
    ("ValueError: something nobody knows", None),
])
def test_the_server_args_dump_explains_nothing(then, code):
    for dump in (SERVER_ARGS, SERVER_ARGS.replace("kt_cpuinfer=60", "kt_cpuinfer=None"),
                 "[2026-01-01 00:00:00] " + SERVER_ARGS, "None, " * 5000 + "kt_cpuinfer"):
        found = [f.code for f in crashes.explain([dump, "Traceback (most recent call last):", then])]
        assert found == ([code] if code else []), (dump[:60], found)


def test_kt_kernels_own_none_cpuinfer_traceback_is_explained():
    tb = ["Traceback (most recent call last):",
          '  File "/x/kt_kernel/experts_base.py", line 334, in <listcomp>',
          "    cpuinfer_threads // threadpool_count + (1 if i < cpuinfer_threads % threadpool_count else 0)",
          "    ~~~~~~~~~~~~~~~~~^^~~~~~~~~~~~~~~~~",
          "TypeError: unsupported operand type(s) for //: 'NoneType' and 'int'"]
    assert [f.code for f in crashes.explain(tb)] == ["KT-E541"]
    # the same TypeError from anywhere else is not a cpuinfer problem
    other = ['  File "/x/model.py", line 3, in f', "    a // b",
             "TypeError: unsupported operand type(s) for //: 'NoneType' and 'int'"]
    assert crashes.explain(other) == []
    assert [f.code for f in crashes.explain(["[2026-01-01 TP0] TypeError: KTMoEWrapper() argument "
                                             "'cpuinfer_threads' must be int, not None"])] == ["KT-E541"]


def test_crash_advice_reads_the_launched_plan():
    """KT-E540 / KT-E541 with the flag in the argv: the installed SGLang did not take it (newcomer's friction)."""
    line = ("TypeError: empty() received an invalid combination of arguments - got (NoneType, int, int, "
            "dtype=torch.dtype), but expected one of:")
    argv = ["python", "-m", "sglang.launch_server", "--kt-num-gpu-experts", "8", "--kt-cpuinfer", "60"]
    passed = crashes.explain([line], {"kt.num_gpu_experts": 8}, argv=argv)[0]
    assert passed.code == "KT-E540"
    assert "kt-launch passed --kt-num-gpu-experts 8" in passed.fix and "did not take the flag" in passed.fix
    assert "set kt.num_gpu_experts" not in passed.fix
    unset = crashes.explain([line], {}, argv=["python", "-m", "sglang.launch_server"])[0]
    assert "set kt.num_gpu_experts" in unset.fix
    cpu = crashes.explain(["TypeError: KTMoEWrapper() argument 'cpuinfer_threads' must be int, not None"], {},
                          argv=argv)[0]
    assert cpu.code == "KT-E541" and "kt-launch passed --kt-cpuinfer 60" in cpu.fix


def test_every_pattern_is_an_rx_checked_for_shape():
    assert all(isinstance(r, Rx) for r in ALL_RX)
    assert all(isinstance(s.pattern, Rx) and (s.after is None or isinstance(s.after, Rx))
               for s in crashes.SIGNATURES)
    assert not any(isinstance(v, re.Pattern) for v in vars(loop).values() if v is not loop._LINE_END)


def test_the_counting_sees_the_regex_calls(counted):
    calls, bulk = counted
    calls.clear()
    _through_the_supervisor("Load weight begin\n" + "x\n" * 300_000 + "TypeError: later\n")
    assert calls and bulk == []
