"""The method table (core/methods.py) is the one place that says what a kt-kernel method does (issue 27 item 1)."""

from __future__ import annotations

import re
from pathlib import Path

from kt_launch.core.methods import METHODS, MOE_LORA_SFT_METHODS, SFT_METHODS
from kt_launch.resolve import methods as m

PKG = Path(__file__).resolve().parents[2] / "kt_launch"


def test_views_keep_what_the_scattered_lists_said():
    """The views other modules read are the lists they used to hard-code (behaviour unchanged)."""
    assert set(m.NEVER_AVAILABLE) == {"SYCL_GPTQ_INT4", "MOE_INT4", "MOE_INT8"}
    assert set(m.READS_HF_CHECKPOINT) == {"BF16", "FP8", "FP8_PERCHANNEL", "GPTQ_INT4", "MXFP4", "MXFP8", "NVFP4",
                                          "RAWINT4"}
    assert set(m.NEEDS_CONVERTED) == {"AMXINT4", "AMXINT8"}
    assert MOE_LORA_SFT_METHODS == ("AMXBF16_SFT", "AMXINT8_SFT", "AMXINT4_SFT")
    assert m.SFT_FROM_KT_METHOD == {"AMXBF16": "AMXBF16_SFT", "BF16": "AMXBF16_SFT", "AMXINT8": "AMXINT8_SFT",
                                    "AMXINT4": "AMXINT4_SFT"}
    assert m.KT_METHOD_FOR_SFT == {"AMXBF16_SFT": "AMXBF16", "AMXINT8_SFT": "AMXINT8", "AMXINT4_SFT": "AMXINT4"}
    assert m.SFT_BASE_WEIGHTS == {"AMXBF16_SFT": "model.path", "AMXINT8_SFT": "kt.weight_path",
                                  "AMXINT4_SFT": "kt.weight_path"}


def test_variants_per_reference():
    """kt-kernel 0.7.2 (shared/reference/kt-kernel-0.7.2.md §3.1, §4)."""
    for name in ("AMXINT4", "AMXINT8", "FP8_PERCHANNEL"):
        assert not m.implements("avx2", name) and m.implements("avx512_base", name)
    for name in ("BF16", "FP8", "RAWINT4", "GPTQ_INT4", "MXFP4", "MXFP8"):
        assert m.implements("avx2", name)
    for name in SFT_METHODS:
        r = METHODS[name]
        assert r.sft and r.base and m.is_sft(name)
        if name != "MXFP4_SFT" and r.available:
            assert set(r.variants) == {"amx", "avx512_bf16"}, name
    assert m.implements("avx2", "MXFP4_SFT")
    # AMXBF16_SFT_SkipLoRA: one answer from the table (was: SFT by one test, not by the other)
    assert m.is_sft("AMXBF16_SFT_SkipLoRA") and not m.implements("avx2", "AMXBF16_SFT_SkipLoRA")
    assert m.gpu_experts_in_ram("amx", "BF16") and not m.gpu_experts_in_ram("avx2", "BF16")
    assert not m.ram_from_headers("amx", "RAWINT4") and m.ram_from_headers("avx2", "RAWINT4")
    # MXFP4 the other way round: the avx2 class keeps FP32 group scales (tests/backend/test_mxfp4_ram.py)
    assert m.ram_from_headers("amx", "MXFP4") and not m.ram_from_headers("avx2", "MXFP4")


def test_no_code_decides_by_a_method_name():
    """No "_SFT" substring or suffix test outside the table; the probe worker (standalone, no kt_launch) only as the
    fallback for a hand-written spec."""
    pat = re.compile(r'''(endswith|startswith)\(\s*["']_SFT|["']_SFT["']\s+in\b''')
    hits = [f"{p.relative_to(PKG)}:{i}" for p in PKG.rglob("*.py") if p.name != "probe_worker.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pat.search(line)]
    assert not hits, hits


def test_skip_lora_is_a_row_field_the_probe_reads():
    """The SkipLoRA classes take lora_rank 0: the probe reads the row's `skip_lora`, not the method's name."""
    from kt_launch.backend.probe import ProbeSpec
    from kt_launch.core.methods import METHODS

    assert {n for n, r in METHODS.items() if r.skip_lora} == {n for n in METHODS if n.endswith("_SkipLoRA")}
    for name, row in METHODS.items():
        if not row.sft:
            continue
        spec = ProbeSpec(method=name, hidden_size=128, moe_intermediate_size=256, num_experts=8, top_k=2,
                         cpuinfer=2, threadpool_count=1, lora_rank=0)
        assert any("lora_rank=0 must be positive" in p for p in spec.validate()) is not row.skip_lora, name
