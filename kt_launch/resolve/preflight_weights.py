"""Preflight rules for expert weights (model dir, kt.weight_path, SFT base weights) and for the host the
server will run on (CPU variant, memory, GPUs, port). Pure. Listed in `rules.PREFLIGHT`.

Layouts per method: kt-kernel 0.7.2's loaders (kt_kernel/utils/amx.py AMXMoEWrapper and NativeMoEWrapper
`load_weights`, kt_kernel/sft/amx.py for the SFT methods); CPU variants: resolve/isa.py.
"""

from __future__ import annotations

from typing import Iterator

from kt_launch.core.findings import Finding, error, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.isa import OVERRIDE_ENV, choose_variant, server_variant_override
from kt_launch.resolve.ports import port_verdict
from kt_launch.resolve.verdicts import variant_override
from kt_launch.resolve.methods import (NEEDS_CONVERTED, READS_HF_CHECKPOINT, effective_method, implements, is_sft,
                                       methods_for_shape, row, shape_problems)
from kt_launch.resolve.expert_sources import bf16_sft_source, consumed_weights
from kt_launch.core.memory import MemoryPlan
from kt_launch.resolve.preflight import (Values, _short, artifacts, convert_command, node_findings,
                                         safetensors_findings)

GiB = 1 << 30


def _beside_model(inp: ResolveInput, method: str) -> str:
    return inp.config.model.path.rstrip("/") + f"-{method}"


# -- HF model dir --------------------------------------------------------------------------------

def check_model_dir(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a = artifacts(inp)
    if a is None or a.model is None or a.model.node.kind != "directory":
        return  # a missing model dir is KT-E108 (config.json)
    md = a.model
    if md.index_problem:
        yield error("KT-E224", f"model.path: {md.index_problem}", "restore model.safetensors.index.json from the "
                    "model's source (SGLang uses it to find every tensor)")
    if md.missing_shards:
        yield error("KT-E225", f"model.path: {len(md.missing_shards)} shard(s) named in {md.index} are missing: "
                    f"{', '.join(md.missing_shards[:4])}{' ...' if len(md.missing_shards) > 4 else ''}",
                    "finish the download (e.g. huggingface-cli download <repo> --local-dir <model.path>)")
    for shard in md.shards:
        yield from safetensors_findings("model.path", shard)
    if not md.shards and not md.missing_shards and md.index is None:
        yield warning("KT-W226", f"model.path: {md.path} holds no *.safetensors shard",
                      "point model.path at the HuggingFace safetensors checkpoint")


# -- SFT base weights (seed bug 4: "base weights not found") ------------------------------------------

def check_base_weights(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a, m, ml = artifacts(inp), inp.model, inp.config.moe_lora
    if a is None or m is None or ml is None or values["moe_lora.sft_method"].value != "AMXBF16_SFT":
        return  # INT8/INT4 SFT read converted kt.weight_path: check_weight_dir
    got = bf16_sft_source(inp, values, a)
    if got is None:
        return
    field, path, exp, broken = got
    where = f"{field} ({path})" + (" (sglang-kt hands --kt-weight-path to kt-kernel as the SFT base weights)"
                                   if field == "kt.weight_path" else "")
    if not exp.present:
        yield error("KT-E227", f"AMXBF16_SFT reads its base experts from {where}, but its safetensors hold no routed "
                    "expert tensors (…mlp.experts.E.{gate,up,down}_proj.weight); kt-kernel fails with \"base weights "
                    "not found\" after the GPU weights have loaded", f"point {field} at the original BF16 HF "
                    f"checkpoint{' (e.g. model.path)' if field == 'kt.weight_path' else ''}, or use AMXINT8_SFT/AMXINT4_SFT with converted kt.weight_path")
        return
    short = [layer for layer in m.moe_layers if exp.layers.get(layer, 0) < m.num_experts]
    if short and not broken:  # a broken shard explains missing experts; it has its own finding
        yield error("KT-E227", f"AMXBF16_SFT base weights incomplete in {where}: MoE layer(s) {_short(short)} lack "
                    f"some of the {m.num_experts} experts' gate/up/down weights", f"finish the download of {field}")
    if exp.dtypes - {"BF16"}:
        yield error("KT-E228", f"AMXBF16_SFT needs BF16 expert weights, but {where} stores them as "
                    f"{', '.join(sorted(exp.dtypes))}", f"use the BF16 checkpoint for {field}, or AMXINT8_SFT/"
                    "AMXINT4_SFT with converted weights in kt.weight_path")


# -- kt.weight_path vs kt.method ---------------------------------------------------------------------

def hf_method(exp) -> str:
    """The kt-kernel method that reads these HF expert tensors as they are (by their suffixes and dtypes)."""
    return _hf_method(exp)


def _hf_method(exp) -> str:
    if "qweight" in exp.suffixes:
        return "GPTQ_INT4"
    if "weight_packed" in exp.suffixes:
        return "RAWINT4"
    if any(d.startswith("F8") for d in exp.dtypes):
        return "FP8"
    return "BF16"


def _amx_bits(w, m) -> str | None:
    if w.amx_gate_bytes is None or m is None:
        return None
    ratio = w.amx_gate_bytes / (m.hidden_size * m.moe_intermediate_size)
    if 0.4 <= ratio <= 0.6:
        return "AMXINT4"
    if 0.9 <= ratio <= 1.1:
        return "AMXINT8"
    return None


def check_weight_dir(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a = artifacts(inp)
    got = consumed_weights(inp, values)
    if a is None or got is None:
        return
    method, path = got
    m = inp.model
    w = a.weights if a.weights is not None and a.weights.path == path else None
    if w is None:
        if a.model is None or path != inp.config.model.path or a.model.node.kind != "directory":
            return
        layout, exp, what = ("hf" if a.model.experts.present else None), a.model.experts, "model.path"
    else:
        fix = f"convert into it: {convert_command(inp)}" if method in NEEDS_CONVERTED else ""
        node = [] if w.node.kind == "gguf" else node_findings("kt.weight_path", w.node, "dir",
                                                              fix if w.node.kind == "missing" else "")
        if node:
            yield from node
            return
        layout, exp, what = w.looks_like, w.hf, "kt.weight_path"
    want = "amx" if method in NEEDS_CONVERTED else "gguf" if method == "LLAMAFILE" else \
        "hf" if method in READS_HF_CHECKPOINT else None
    if want is None:
        return
    looks = {"amx": (_amx_bits(w, m) if w else None) or "AMXINT4 or AMXINT8", "gguf": "LLAMAFILE",
             "hf": _hf_method(exp)}.get(layout or "")
    kinds = {"amx": "kt-kernel converted AMX", "gguf": "GGUF", "hf": "HuggingFace expert"}
    if layout != want:
        if layout is None:
            yield error("KT-E220", f"{what}: {path} holds no expert weights kt-kernel can read for kt.method={method} "
                        "(no blk.*.numa.* keys, no _layer_*/_numa_* dirs, no HF expert tensors, no .gguf)",
                        (f"convert the checkpoint: {convert_command(inp, _beside_model(inp, method))}, then set "
                         "kt.weight_path to that dir" if what == "model.path" else
                         f"convert the checkpoint into it: {convert_command(inp)}") if want == "amx" else
                        "point kt.weight_path at the weights for this method")
        else:
            yield error("KT-E220", f"{what}: {path} holds {kinds[layout]} weights, which kt.method={method} cannot "
                        f"read; the dir looks like {looks}", f"set kt.method={looks.split(' ')[0]}, or point "
                        f"kt.weight_path at {kinds[want]} weights" + (
                            f" (convert them: {convert_command(inp, _beside_model(inp, method))}, then set "
                            "kt.weight_path to that dir)" if want == "amx" else ""))
        return
    if layout == "amx":
        yield from _amx_checks(inp, values, w, method, path)
    elif layout == "hf" and m is not None:
        short = [layer for layer in m.moe_layers if exp.layers.get(layer, 0) < m.num_experts]
        if short:
            yield error("KT-E222", f"{what}: {path} lacks expert weights of MoE layer(s) {_short(short)} "
                        f"({m.num_experts} experts each); kt-kernel fails with \"No experts found\" after the GPU load",
                        "finish the download or point at the complete checkpoint")
    if w is not None and method != "LLAMAFILE":
        for name, paths in list(w.duplicates.items())[:3]:
            yield error("KT-E223", f"kt.weight_path: {len(paths)} files named {name} under {path} ({', '.join(paths)}); "
                        "kt-kernel walks the tree and keys files by basename, so one silently shadows the other",
                        "point kt.weight_path at the exact dir, or move the stale copy out of the tree")
        for f in w.safetensors:
            yield from safetensors_findings("kt.weight_path", f, "kt-kernel")


def _amx_checks(inp: ResolveInput, values: Values, w, method: str, path: str) -> Iterator[Finding]:
    m = inp.model
    bits = _amx_bits(w, m)
    if bits is not None and bits != method:
        yield error("KT-E220", f"kt.weight_path: {path} holds {bits[3:]} AMX weights but kt.method={method}; the dir "
                    f"looks like {bits}", f"set kt.method={bits} (or moe_lora.sft_method={bits}_SFT), or convert "
                    f"the weights for {method}: {convert_command(inp, _beside_model(inp, method))}")
    sft = values.get("moe_lora.sft_method")
    if sft is not None and sft.value == "AMXINT8_SFT" and values["runtime.flavor"].value == "sglang-kt" \
            and w.amx_form == "safetensors":
        yield error("KT-E220", f"kt.weight_path: {path} holds blk.* safetensors, but kt-kernel 0.7.2's AMXINT8_SFT "
                    "reads only pre-quantized .kt files (_layer_*/_numa_*/)", "convert to the .kt layout, or use "
                    "AMXINT4_SFT / AMXBF16_SFT")
    pools = values["kt.threadpool_count"].value
    counts = sorted(set(w.amx_numa.values()))
    if counts and counts != [pools]:
        yield error("KT-E221", f"kt.weight_path: {path} is split into {' / '.join(map(str, counts))} NUMA partition(s) "
                    f"but kt.threadpool_count is {pools}; kt-kernel needs one partition per thread pool",
                    (f"set kt.threadpool_count={counts[0]}, or " if len(counts) == 1 else "") + "convert the weights "
                    f"again for {pools} pool(s) into a new dir: {convert_command(inp, path.rstrip('/') + f'-{pools}numa')}")
    if sft is not None and sft.value == "AMXINT4_SFT" and w.amx_form == "safetensors" and m is not None \
            and m.moe_intermediate_size % max(1, pools):
        yield error("KT-E221", f"kt.weight_path: AMXINT4_SFT splits moe_intermediate_size={m.moe_intermediate_size} "
                    f"over kt.threadpool_count={pools} NUMA partitions, which does not divide it",
                    "use a thread-pool count that divides moe_intermediate_size (and convert the weights for it)")
    if m is not None:
        missing = [layer for layer in m.moe_layers if layer not in w.amx_layers]
        partial = [layer for layer, n in w.amx_layers.items() if layer in m.moe_layers and n < m.num_experts]
        if missing:
            yield error("KT-E222", f"kt.weight_path: {path} has no experts for MoE layer(s) {_short(missing)} of "
                        f"{len(m.moe_layers)}; kt-kernel fails with \"No experts found for key blk.L\" after the GPU "
                        "load", f"finish the conversion: {convert_command(inp)} (it resumes)")
        elif partial:
            yield error("KT-E222", f"kt.weight_path: {path} has fewer than {m.num_experts} experts in layer(s) "
                        f"{_short(partial)}", "convert the weights again")


# -- CPU instruction set ---------------------------------------------------------------------------

def check_isa(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    host = inp.host
    if not host.cpu.flags:
        return
    method = effective_method(lambda k: values[k].value if k in values else None)
    override, where = server_variant_override(inp)
    ch = choose_variant(host.cpu.flags, override)
    verdict = variant_override(ch, where, host.source)
    if verdict is not None:
        yield verdict
    if not implements(ch.variant, method):
        make = _planning_level(inp)
        need = "the amx or avx512_bf16 variant (AVX512-BF16)" if is_sft(method) else \
            "an amx or avx512 variant (AVX512F + AVX512BW)"
        forced = f" (forced by {where} {OVERRIDE_ENV}={ch.override}; the CPU would get {ch.detected})" \
            if ch.override else ""
        unset = f"remove {OVERRIDE_ENV} from " + where.removesuffix("'s") + ", or " if ch.override and \
            implements(ch.detected, method) else ""
        yield make("KT-E240", "KT-W240", f"{'moe_lora.sft_method' if is_sft(method) else 'kt.method'}={method} needs "
                    f"{need}, but the CPU of {host.source} ({host.cpu.model}) gets kt-kernel's {ch.variant} variant"
                    f"{forced}, which does not implement it", unset + ("use kt.method BF16 (avx2 has BF16, FP8, "
                    "RAWINT4, GPTQ_INT4 kernels) or run on a CPU with AVX512/AMX" if not is_sft(method) else
                    "run MoE-LoRA on a CPU with AVX512-BF16 or AMX (Sapphire Rapids or newer, Zen 4 or newer)"))


def shape_variant(inp: ResolveInput, method: str) -> str | None:
    """The CPU variant whose kernels build `method` for the server: the host's (CPU flags and
    KT_KERNEL_CPU_VARIANT), or where that variant lacks the method (KT-E240 says so) or the CPU is not known,
    None (the rules common to every variant implementing it)."""
    if not inp.host.cpu.flags:
        return None
    variant = choose_variant(inp.host.cpu.flags, server_variant_override(inp)[0]).variant
    return variant if implements(variant, method) else None


def check_kernel_shape(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    """The kernel-shape gate: hidden_size / moe_intermediate_size that kt-kernel's kernels for the effective method
    cannot tile with kt.threadpool_count pools (resolve/methods.py shape_problems, core/methods.py cites the C++).
    kt-kernel says so only after the weights are read; here before anything is read or started."""
    m = inp.model
    if m is None or not m.hidden_size or not m.moe_intermediate_size:
        return
    method = effective_method(lambda k: values[k].value if k in values else None)
    r = row(method)
    if r is None:
        return
    pools = values["kt.threadpool_count"].value if "kt.threadpool_count" in values else 1
    variant = shape_variant(inp, method)
    problems = shape_problems(method, variant, m.hidden_size, m.moe_intermediate_size, pools or 1)
    if not problems:
        return
    key = "moe_lora.sft_method" if r.sft else "kt.method"
    base = r.base if r.sft else method
    others = [x for x in methods_for_shape(variant, m.hidden_size, m.moe_intermediate_size, pools or 1) if x != base]
    fewer = next((p for p in range((pools or 1) - 1, 0, -1)
                  if not shape_problems(method, variant, m.hidden_size, m.moe_intermediate_size, p)), None)
    fixes = []
    if others and not r.sft:
        fixes.append(f"use kt.method {' or '.join(others)}, which builds this shape")
    if fewer is not None:
        fixes.append(f"set kt.threadpool_count={fewer} (the intermediate is split over the pools)")
    for p in problems:
        yield error("KT-E140", f"{p.text()} ({key}={method}, model.path config.json); kt-kernel cannot tile it and "
                    "fails after the weights are read", "; or ".join(fixes) or
                    "no kt-kernel method this CPU runs builds this shape", fields={"key": p.key, "method": method})


def _planning_level(inp: ResolveInput):
    """Errors about this machine become warnings when it has no GPU: it is only planning, not the server."""
    if not inp.host.gpus and inp.host.local and not inp.launch_here:
        return lambda code, planning_code, msg, fix: warning(planning_code, msg + " (this machine has no GPU, so it is "
                                              "taken as a planning host; use --host-facts for the server)", fix)
    return lambda code, planning_code, msg, fix: error(code, msg, fix)


# -- memory, GPUs, port -----------------------------------------------------------------------------

def check_memory(inp: ResolveInput, plan: MemoryPlan | None) -> Iterator[Finding]:
    """Host RAM against the memory plan's figure (the plan's own, computed once per resolve): every routed expert in
    the CPU method's format (GPU-placed ones too, kvcache-ai/ktransformers#2084) plus kt-kernel's per-pool
    buffers; per NUMA node where pools split them."""
    host = inp.host
    ram = plan.ram if plan is not None and inp.model is not None and host.memory_total_bytes else None
    if ram is None:
        return  # no model shape (--no-check without --model-facts) or no RAM size: nothing to judge
    msg = (f"kt-kernel needs {ram.need_bytes / GiB:.1f} GiB of RAM: every routed expert in its CPU format "
           f"({ram.experts_bytes / GiB:.1f} GiB, {ram.experts_source}; "
           f"{'GPU-placed experts stay in RAM too' if ram.gpu_experts_in_ram else 'GPU-placed ones are not loaded'}) "
           "plus its "
           f"buffers ({ram.other_bytes / GiB:.1f} GiB for chunked_prefill_size {plan.chunked_prefill_size})")
    smaller = ("AMXINT4" if not ram.cpu_variant or implements(ram.cpu_variant, "AMXINT4") else
               f"RAWINT4 or GPTQ_INT4: the {ram.cpu_variant} build has no AMXINT4")
    if ram.need_bytes > host.memory_total_bytes:
        yield _planning_level(inp)("KT-E230", "KT-W230", f"{msg}, more than the {host.memory_total_bytes / GiB:.1f} GiB of RAM on "
                                   f"{host.source}; the server is killed for memory after the GPU weights have loaded",
                                   f"use a smaller method ({smaller}), a smaller server.chunked_prefill_size, or a "
                                   "bigger host")
        return
    if host.memory_available_bytes and ram.need_bytes > host.memory_available_bytes:
        yield warning("KT-W230", f"{msg}, more than the {host.memory_available_bytes / GiB:.1f} GiB available now on "
                      f"{host.source}", "free memory (other servers, page cache pinned by tmpfs) before launching")
    for node in ram.nodes:
        if node.total_bytes == 0:
            yield warning("KT-W150", f"NUMA node {node.node} has no memory of its own ({host.source}): its thread "
                          f"pool's 1/{len(ram.nodes)} of the experts plus buffers, {node.need_bytes / GiB:.1f} GiB, "
                          "is allocated on other nodes and read across the interconnect (slower)",
                          "put kt.numa_nodes on nodes with memory, or use fewer kt.threadpool_count")
        elif node.total_bytes and node.need_bytes > node.total_bytes:
            yield warning("KT-W608", f"NUMA node {node.node} holds 1/{len(ram.nodes)} of the experts plus one pool's "
                          f"buffers, {node.need_bytes / GiB:.1f} GiB, more than its {node.total_bytes / GiB:.1f} GiB; "
                          "the rest spills to the other node (slower) or fails", "spread kt.numa_nodes over nodes "
                          "with more memory, or lower server.chunked_prefill_size")


def check_gpus(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    tp = values.get("server.tp_size")
    tp = tp.value if tp is not None and tp.value else 1
    n = len(inp.host.gpus)
    visible = inp.config.runtime.cuda_visible_devices
    first = visible.split(",")[0].strip() if visible is not None else ""
    if first.startswith("-") and first[1:].isdigit():  # CUDA stops at the first invalid entry: no GPU at all
        yield error("KT-E151", f"runtime.cuda_visible_devices={visible} hides every GPU from SGLang (CUDA stops at "
                    f"the first entry that names no GPU, {first}), which needs a CUDA GPU for attention, the KV cache "
                    "and the GPU experts", "give the GPUs to use (0 or 0,1), or unset it for every GPU")
        return
    if n == 0:
        yield warning("KT-W231", f"no GPUs seen on {inp.host.source}"
                      + (f" (runtime.cuda_visible_devices={visible} leaves none of its GPUs)" if visible else "")
                      + f"; server.tp_size={tp} needs {tp} GPU(s) on the machine that runs the server", "plan against the server's facts: --host-facts FILE "
                      "(recorded there with `kt-launch doctor --json`)")
    elif n < tp:
        yield error("KT-E231", f"server.tp_size={tp} but only {n} GPU(s) are visible on {inp.host.source}"
                    + (f" (runtime.cuda_visible_devices={inp.config.runtime.cuda_visible_devices})"
                       if inp.config.runtime.cuda_visible_devices is not None else ""),
                    f"set server.tp_size to at most {n}, or make more GPUs visible")


def check_port(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a = artifacts(inp)
    p = getattr(a, "port", None)
    if p is None or not inp.host.local:
        return  # planning for another host: this machine's ports say nothing
    where = f"server.host={p.host} server.port={p.port}"
    v = port_verdict(p.status)
    if v is not None:
        yield error("KT-E232", f"{where}: the port {v.why}; SGLang would fail to start its HTTP server", v.fix)
    elif p.status in ("not-local", "unresolvable"):
        yield warning("KT-W232", f"{where}: cannot listen on this address here ({p.detail or p.status})",
                      "use 127.0.0.1, 0.0.0.0 or an address of this machine")


def layout_method(w, model) -> str | None:
    """The kt-kernel method a weight dir's layout serves, by the same tests check_weight_dir applies: AMXINT4 or
    AMXINT8 (converted; told apart by one expert's gate bytes against the model shape), LLAMAFILE (GGUF), or the
    HF checkpoint's own (BF16, FP8, ...). None when it holds no experts or the AMX bits are unclear.
    `kt-launch init` matches the dirs beside a model by it."""
    layout = w.looks_like
    if layout == "amx":
        return _amx_bits(w, model)
    if layout == "gguf":
        return "LLAMAFILE"
    if layout == "hf":
        return _hf_method(w.hf)
    return None
