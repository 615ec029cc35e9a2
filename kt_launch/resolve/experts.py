"""Which experts run where, with which kt-kernel method, reading which weights."""

from __future__ import annotations


from kt_launch.resolve.steps import step
from kt_launch.core.findings import Finding, error, info, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.resolve.methods import (INFERENCE_METHODS, KT_METHOD_FOR_SFT, NEEDS_CONVERTED, NEVER_AVAILABLE,
                                       READS_HF_CHECKPOINT, SFT_BASE_WEIGHTS, SFT_FROM_KT_METHOD)
from kt_launch.core.plan import Resolved
from kt_launch.resolve import memory as mem
from kt_launch.resolve.memory_fit import plan_checks
from kt_launch.resolve.preflight import convert_command
from kt_launch.resolve.values import user_value


@step(fills=("kt.method", "moe_lora.sft_method"), reads=("config",))
def resolve_method(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """kt.method upper-cased and checked; in MoE-LoRA mode the inference method behind moe_lora.sft_method."""
    cfg, prov = inp.config, inp.provenance
    method = cfg.kt.method
    if cfg.moe_lora is not None:
        sft = cfg.moe_lora.sft_method
        values["moe_lora.sft_method"] = user_value(prov, "moe_lora.sft_method", sft,
                                                   "" if prov.of("moe_lora.sft_method") else "AMXBF16_SFT is the default")
        want = KT_METHOD_FOR_SFT[sft]
        if method is None:
            values["kt.method"] = Resolved(want, "derived", f"the kt-kernel method behind {sft}")
        else:
            values["kt.method"] = user_value(prov, "kt.method", method)
            if SFT_FROM_KT_METHOD.get(method) != sft:
                out.append(error("KT-E110", f"kt.method={method} does not serve moe_lora.sft_method={sft} "
                                 f"(SGLang maps kt.method to the SFT method)",
                                 f"set kt.method={want} or remove kt.method"))
        return
    if method is None:
        values["kt.method"] = Resolved("AMXINT4", "default", "SGLang's default; set kt.method to match kt.weight_path")
        return
    values["kt.method"] = user_value(prov, "kt.method", method)
    if method not in INFERENCE_METHODS:
        hint = " (AMXBF16 is only valid with moe_lora)" if method == "AMXBF16" else ""
        out.append(error("KT-E111", f"kt.method={method} is not a kt-kernel 0.7.2 inference method{hint}",
                         f"use one of {', '.join(m for m in INFERENCE_METHODS if m not in NEVER_AVAILABLE)}"))
    elif method in NEVER_AVAILABLE:
        out.append(error("KT-E112", f"kt.method={method} passes kt-kernel's validation but no CPU variant of "
                         "kt-kernel 0.7.2 implements it", "use AMXINT4, AMXINT8 or BF16"))


@step(fills=("kt.weight_path", "moe_lora.base_weights"),
      reads=("kt.method", "moe_lora.sft_method", "runtime.flavor", "config"))
def resolve_weights(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """kt.weight_path and, in MoE-LoRA mode, where the base expert weights are read (seed bug 3)."""
    cfg, prov = inp.config, inp.provenance
    wp = cfg.kt.weight_path
    method = values["kt.method"].value
    if cfg.moe_lora is not None:
        sft = cfg.moe_lora.sft_method
        source = SFT_BASE_WEIGHTS[sft]
        fork_reads_hf = values["runtime.flavor"].value == "kt-moe-lora"
        if source == "model.path" and fork_reads_hf:
            values["moe_lora.base_weights"] = Resolved(cfg.model.path, "derived",
                                                       f"{sft} reads BF16 experts from the HF model dir (model.path)")
            if wp is not None:
                values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp, f"passed on, but {sft} does not read it")
                out.append(warning("KT-W111", f"kt.weight_path={wp} is given but {sft} reads its base experts from "
                                   f"model.path ({cfg.model.path}); kt.weight_path only switches kt-kernel on",
                                   "use AMXINT8_SFT/AMXINT4_SFT to serve converted weights, or drop kt.weight_path"))
            else:
                values["kt.weight_path"] = Resolved(cfg.model.path, "derived",
                                                    "SGLang enables kt-kernel only with --kt-weight-path; "
                                                    f"{sft} reads the HF dir")
        elif source == "model.path":
            # sglang-kt hands --kt-weight-path to kt-kernel as the SFT base weights: .kt files or BF16 HF safetensors.
            if wp is None:
                values["kt.weight_path"] = Resolved(cfg.model.path, "derived",
                                                    f"{sft} reads BF16 experts; the HF model dir has them")
            else:
                values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp)
            values["moe_lora.base_weights"] = Resolved(values["kt.weight_path"].value, "derived",
                                                       f"sglang-kt reads {sft} base experts from --kt-weight-path")
        else:
            if wp is None:
                values["moe_lora.base_weights"] = Resolved(None, "derived", f"{sft} reads kt.weight_path, which is unset")
                out.append(error("KT-E113", f"moe_lora.sft_method={sft} reads its base experts from kt.weight_path, "
                                 "which is not set (kt-kernel fails after the GPU weights have loaded)",
                                 f"set kt.weight_path to the converted {KT_METHOD_FOR_SFT.get(sft, sft)} weight dir, or use AMXBF16_SFT"))
            else:
                values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp)
                values["moe_lora.base_weights"] = Resolved(wp, "derived", f"{sft} reads converted experts from kt.weight_path")
        return
    if wp is not None:
        values["kt.weight_path"] = user_value(prov, "kt.weight_path", wp)
    elif method in READS_HF_CHECKPOINT:
        values["kt.weight_path"] = Resolved(cfg.model.path, "derived", f"{method} reads the original HF checkpoint")
    else:
        need = "converted AMX weights" if method in NEEDS_CONVERTED else "its weight files"
        out.append(error("KT-E114", f"kt.weight_path is not set; kt.method={method} needs {need}, and without "
                         "--kt-weight-path SGLang does not enable kt-kernel at all (all experts load on the GPU)",
                         "set kt.weight_path to a dir of converted weights; "
                         f"`{convert_command(inp, '<dir>')}` writes one with kt-kernel's own quantizer"
                         if method in NEEDS_CONVERTED else "set kt.weight_path (for this method: model.path)"))


@step(fills=("memory.setup",),
      reads=("kt.method", "moe_lora.sft_method", "kt.weight_path", "kt.threadpool_count", "kt.numa_nodes",
             "server.tp_size", "runtime.flavor", "model", "host", "weights", "artifacts", "config"))
def resolve_memory_setup(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """The memory plan's set-up (resolve/memory.py Setup), made once per resolve: the GPU experts, the KV tokens,
    the memory checks and the plan's memory table all read it."""
    values["memory.setup"] = Resolved(mem.setup_from(inp, values), "derived", "the memory plan's set-up")


@step(fills=("kt.num_gpu_experts", "kt.gpu_experts_ratio", "server.max_total_tokens"),
      reads=("memory.setup", "kt.method", "moe_lora.sft_method", "kt.weight_path", "kt.threadpool_count",
             "kt.numa_nodes", "runtime.flavor", "model", "host", "weights", "artifacts", "config"))
def resolve_gpu_experts(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """kt.num_gpu_experts: the user's value (checked against the memory plan), or in inference mode the largest
    per-layer count that fits every GPU of the TP group with room for the KV target (resolve/memory.py)."""
    cfg, prov = inp.config, inp.provenance
    n, ratio = cfg.kt.num_gpu_experts, cfg.kt.gpu_experts_ratio
    model = inp.model
    if cfg.moe_lora is not None:
        if n is not None and n > 0:
            values["kt.num_gpu_experts"] = user_value(prov, "kt.num_gpu_experts", n)
            out.append(error("KT-E101", f"kt.num_gpu_experts={n} in MoE-LoRA mode: expert LoRA runs only on CPU "
                             "experts, so every expert must stay on the CPU", "set kt.num_gpu_experts=0 or leave it unset"))
        elif n == 0:
            values["kt.num_gpu_experts"] = user_value(prov, "kt.num_gpu_experts", 0)
        else:
            values["kt.num_gpu_experts"] = Resolved(0, "derived", "MoE-LoRA mode keeps every expert on the CPU "
                                                    "(unset, SGLang crashes in torch.empty(None, ...))")
        if ratio is not None:
            out.append(error("KT-E102", "kt.gpu_experts_ratio is set in MoE-LoRA mode; expert LoRA needs all experts "
                             "on the CPU", "remove kt.gpu_experts_ratio"))
        setup = values["memory.setup"].value
        _derive_max_total_tokens(inp, values, setup)
        _memory_checks(inp, values, out, user=None, setup=setup and mem.with_values(setup, values))
        _unused_target(inp, out, "MoE-LoRA mode keeps every expert on the CPU")
        return
    setup = values["memory.setup"].value
    if n is not None:
        values["kt.num_gpu_experts"] = user_value(prov, "kt.num_gpu_experts", n)
        _unused_target(inp, out, f"kt.num_gpu_experts={n} is set; the target only checks it")
    elif ratio is not None and cfg.runtime.flavor == "sglang-kt":
        # the ratio places the experts (kt_ep_wrapper.py:4589-4604); a derived count beside it would be passed unused
        values["kt.num_gpu_experts"] = Resolved(None, "derived", f"not passed: kt.gpu_experts_ratio={ratio} places "
                                                "the GPU experts (sglang-kt ignores --kt-num-gpu-experts beside it)")
        _unused_target(inp, out, f"kt.gpu_experts_ratio={ratio} is set; the target only checks it")
    else:
        values["kt.num_gpu_experts"] = _fitted(inp, setup, out)
    if ratio is not None:
        values["kt.gpu_experts_ratio"] = user_value(prov, "kt.gpu_experts_ratio", ratio)
    n = values["kt.num_gpu_experts"].value or 0
    if model is not None and n > model.num_experts:
        out.append(error("KT-E103", f"kt.num_gpu_experts={n} is more than the {model.num_experts} experts per MoE "
                         f"layer of {cfg.model.path}", f"use a value between 0 and {model.num_experts}"))
        return
    user = "kt.gpu_experts_ratio" if ratio is not None else ("kt.num_gpu_experts" if cfg.kt.num_gpu_experts is not None
                                                            else None)
    _derive_max_total_tokens(inp, values, setup)
    _memory_checks(inp, values, out, user=user, setup=setup)


def _derive_max_total_tokens(inp: ResolveInput, values: dict[str, Resolved], setup) -> None:
    """The KV the plan sized, passed as --max-total-tokens (SGLang takes min(profiled, requested),
    model_runner_kv_cache_mixin.py:626-634): the pool then cannot take the room the plan kept (KT-W607, KT-W611)."""
    if inp.config.server.max_total_tokens or setup is None or values["kt.num_gpu_experts"].source != "derived":
        return  # a user count: the user's KV choice stays theirs (KT-W607 / KT-W611 say what it risks)
    n = values["kt.num_gpu_experts"].value or 0
    r = values.get("kt.gpu_experts_ratio")
    kv = mem.fitted_kv_tokens(setup, n, r.value if r is not None else None)
    if kv >= min(mem.MIN_KV_TOKENS, setup.kv_target):
        values["server.max_total_tokens"] = Resolved(kv, "derived", f"the KV tokens the memory plan leaves on every "
                                                     f"GPU of TP {setup.tp} with {n} GPU experts per layer")


def _unused_target(inp: ResolveInput, out: list[Finding], why: str, margin_too: bool = True) -> None:
    """A user's fit.kv_tokens (or fit.gpu_margin_mib) that chooses nothing is said, never silently dropped."""
    k = inp.config.fit.kv_tokens
    if margin_too and inp.provenance.of("fit.gpu_margin_mib") is not None:
        out.append(info("KT-I609", f"fit.gpu_margin_mib={inp.config.fit.gpu_margin_mib} does not choose "
                        f"kt.num_gpu_experts here: {why}"))
    if inp.provenance.of("fit.kv_tokens") is None:
        return
    if inp.config.server.max_total_tokens:
        why = f"server.max_total_tokens={inp.config.server.max_total_tokens} is the KV target"
    out.append(info("KT-I609", f"fit.kv_tokens={k} does not choose kt.num_gpu_experts here: {why}"))


def _gib(n: float) -> str:
    return f"{n / mem.GiB:.1f} GiB"


def _no_fit_finding(inp: ResolveInput, setup, why: str) -> Finding:
    """KT-W616 when a recorded host has GPUs but the model's facts are missing (the README's "plan on a laptop":
    --host-facts with --no-check reads no config.json or headers), so its GPUs would sit idle; else KT-I605."""
    h = inp.host
    if not h.local and h.gpus and inp.model_problem is None and (setup is None or (setup.gpus and setup.weights is None)):
        return warning("KT-W616", f"kt.num_gpu_experts is unset and {why}: the {len(h.gpus)} GPU(s) of {h.source} "
                       "get no routed experts (0), which the memory fit would place there",
                       "record the model where it is, `kt-launch doctor --model DIR --json > model.json`, and plan "
                       "with --model-facts model.json; or set kt.num_gpu_experts")
    return info("KT-I605", f"kt.num_gpu_experts is unset and {why}: every routed expert stays on the CPU (0)",
                "set kt.num_gpu_experts, or give the facts the memory fit needs")


def _fitted(inp: ResolveInput, setup, out: list[Finding]) -> Resolved:
    """The fit as a resolved value, or 0 with an info finding saying why no fit was made."""
    why = None
    if setup is None:
        why = "the model shape is unknown" + (" (--no-check reads no config.json)" if not inp.checks else "")
    elif not setup.gpus and setup.gpus_unsized:
        why = f"the memory size of {setup.gpus_unsized} GPU(s) of {inp.host.source} is unknown (memory_bytes 0)"
    elif not setup.gpus:
        why = f"no GPUs are known for {inp.host.source} (plan with --host-facts FILE from `kt-launch doctor --json`)"
    elif setup.weights is None:
        why = "the model.path safetensors headers were not read" + (" (--no-check)" if not inp.checks else "")
    if why is not None:
        _unused_target(inp, out, why)
        out.append(_no_fit_finding(inp, setup, why))
        return Resolved(0, "default", f"no memory fit: {why}")
    if inp.config.server.max_total_tokens:
        _unused_target(inp, out, "", margin_too=False)
    f = mem.fit(setup)
    m = setup.model
    if not f.fits:
        return Resolved(0, "derived", f"no room for GPU experts on {f.limited_by} (see KT-E601/KT-E613/KT-W606)")
    rooms = dict((g.index, r) for g, r in mem.room_for_experts(setup, f.kv_tokens))
    g = next((x for x in setup.gpus if x.index == f.gpu), setup.gpus[0])
    bpt = mem.kv_bytes_per_token(m, setup.tp, setup.kv_elem, setup.swa_ratio)
    layers = m.kt_moe_layers or len(m.moe_layers)
    why = (f"the memory fit: {f.max_gpu_experts} of {m.num_experts} experts per layer; GPU {g.index} ({g.name}, "
           f"{_gib(g.memory_bytes)}) keeps {_gib(rooms[g.index])} after reserve, non-expert weights and "
           f"{f.kv_tokens} KV tokens x {bpt} B ({setup.kv_target_key}); one expert per layer costs "
           f"{_gib(f.per_layer_bytes)} ({layers} MoE layers, TP {setup.tp})")
    if f.max_gpu_experts >= m.num_experts:
        out.append(info("KT-I602", f"all {m.num_experts} routed experts of every MoE layer fit on the GPUs with "
                        f"{f.kv_tokens} KV tokens ({setup.kv_target_key}): kt-kernel adds nothing there (its CPU experts would be idle)",
                        "serve the model with plain SGLang, or raise fit.kv_tokens / server.max_total_tokens for "
                        "more KV cache"))
    return Resolved(f.max_gpu_experts, "derived", why)


def _memory_checks(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding], user: str | None,
                   setup) -> None:
    """GPU memory findings: weights that do not fit, a user count or KV target that does not fit, the MLA caveat."""
    if setup is not None:
        out.extend(plan_checks(setup, values))
    if setup is None or not setup.gpus or setup.weights is None:
        return
    m = setup.model
    mf, chunk, graph_bs = mem.mem_fraction_of(setup)
    if mf <= 0:  # only SGLang's default comes out so (a user's value is > 0): the GPU is below its reserve
        g = min(setup.gpus, key=lambda x: x.memory_bytes)
        reserve = mem.sglang_reserved_mib(setup.tp, chunk, graph_bs)
        out.append(error("KT-E150", f"GPU {g.index} ({g.name}) of {inp.host.source} has {g.memory_bytes} bytes "
                         f"({_gib(g.memory_bytes)}), less than SGLang's own reserve for activations, CUDA graphs and "
                         f"NCCL ({reserve / 1024:.1f} GiB): it leaves no GPU memory for weights or KV cache",
                         "plan against the real GPU's facts (`kt-launch doctor --json` on the server), or use a "
                         "bigger GPU"))
        return
    bpt = mem.kv_bytes_per_token(m, setup.tp, setup.kv_elem, setup.swa_ratio)
    floor_kv = min(mem.MIN_KV_TOKENS, setup.kv_target)
    for g, room in mem.room_for_experts(setup, floor_kv):
        if room < 0:
            mf, reserve, nonexp, buf, chunk = mem._gpu_fixed(setup, g, setup.gpus.index(g))
            kv = mem.kv_and_state_bytes(setup, floor_kv)
            state = " and the linear-attention state" if kv > floor_kv * bpt else ""
            mf = round(mf, 4)
            if reserve - setup.gpu_margin > nonexp + buf + kv:  # SGLang's own reserve is the cause, not the weights
                fix = (f"SGLang keeps {_gib(reserve)} of this GPU (mem_fraction_static {mf}"
                       + (", its default for chunked_prefill_size " + str(chunk) if setup.mem_fraction is None else "")
                       + "): set server.mem_fraction_static higher or lower server.chunked_prefill_size; more TP "
                       "does not shrink it")
            else:
                fix = f"raise server.tp_size (now {setup.tp}) to split the weights over more GPUs, or use bigger GPUs"
            out.append(error("KT-E601", f"GPU {g.index} ({g.name}, {_gib(g.memory_bytes)}) cannot hold the model "
                             f"without experts: non-expert weights' TP share {_gib(nonexp)} + kt buffers {_gib(buf)} + "
                             f"{floor_kv} KV tokens{state} {_gib(kv)} + SGLang's reserve {_gib(reserve)} "
                             f"(mem_fraction_static {mf}) is {_gib(g.memory_bytes - room)}", fix))
            return
    at_target = mem.fit(setup)
    at_floor = mem.fit(setup, floor_kv)
    ratio = values.get("kt.gpu_experts_ratio")
    n = values["kt.num_gpu_experts"].value or 0
    r = ratio.value if ratio is not None else None
    if user is not None and (n or r):
        total = mem.gpu_experts_total(m, n, r)
        layers = m.kt_moe_layers or len(m.moe_layers)
        per_layer = total / max(1, layers)
        what = f"kt.gpu_experts_ratio={r} ({total} experts, {per_layer:.1f} per layer)" if r is not None \
            else f"kt.num_gpu_experts={n}"
        if per_layer > max(at_floor.max_gpu_experts, 0):
            out.append(error("KT-E603", f"{what} does not fit on {at_floor.limited_by}: at most "
                             f"{max(at_floor.max_gpu_experts, 0)} experts per layer fit with {floor_kv} KV tokens "
                             f"(the GPU runs out of memory while loading weights)",
                             f"set kt.num_gpu_experts={max(at_target.max_gpu_experts, 0)} (keeps "
                             f"{at_target.kv_tokens} KV tokens), or unset it to get the fit"))
        elif per_layer > max(at_target.max_gpu_experts, 0):
            left = mem.fitted_kv_tokens(setup, n, r)  # beside the linear-attention state pool, if any
            out.append(warning("KT-W604", f"{what} leaves room for about {left} KV tokens, below the target "
                               f"{setup.kv_target} ({setup.kv_target_key}); at most {max(at_target.max_gpu_experts, 0)}"
                               " per layer keep it", f"set kt.num_gpu_experts={max(at_target.max_gpu_experts, 0)}, "
                               f"or lower {setup.kv_target_key}"))
    if inp.config.server.max_total_tokens and not at_target.fits:
        out.append(warning("KT-W606", f"server.max_total_tokens={setup.max_total_tokens} does not fit on "
                           f"{at_target.limited_by} even without GPU experts; SGLang caps the KV pool to what is left",
                           "lower server.max_total_tokens or raise server.tp_size"))
    mtt = values.get("server.max_total_tokens")
    if m.attention == "mla" and not (inp.config.server.max_total_tokens or (mtt and mtt.value)) \
            and values["runtime.flavor"].value == "sglang-kt" \
            and m.qk_nope_head_dim and m.qk_nope_head_dim + m.qk_rope_head_dim < m.kv_lora_rank + m.qk_rope_head_dim:
        sized = m.qk_nope_head_dim + m.qk_rope_head_dim
        alloc = m.kv_lora_rank + m.qk_rope_head_dim
        out.append(warning("KT-W607", f"server.max_total_tokens is unset: sglang-kt 0.7.2 sizes the MLA KV pool by "
                           f"qk_nope_head_dim + qk_rope_head_dim = {sized} per layer (model_runner_kv_cache_mixin.py"
                           f":113-121) but allocates kv_lora_rank + qk_rope_head_dim = {alloc} (memory_pool.py:1414), "
                           f"so its pool takes {alloc / sized:.1f}x the room it measured",
                           f"set server.max_total_tokens (e.g. {setup.kv_target}, what the plan keeps room for)"))


@step(fills=("model.path", "model.served_name", "model.shape"), reads=("model", "config"))
def resolve_model_shape(inp: ResolveInput, values: dict[str, Resolved], out: list[Finding]) -> None:
    """model.path and served name as given, and the MoE shape config.json gives (layers, experts, top-k)."""
    cfg = inp.config
    values["model.path"] = user_value(inp.provenance, "model.path", cfg.model.path)
    if cfg.model.served_name is not None:
        values["model.served_name"] = user_value(inp.provenance, "model.served_name", cfg.model.served_name)
        if ":" in cfg.model.served_name:
            out.append(error("KT-E107", f"model.served_name={cfg.model.served_name!r} contains ':', which SGLang rejects",
                             "pick a name without ':'"))
    m = inp.model
    if m is not None:
        values["model.shape"] = Resolved(
            f"{m.model_type}: {m.num_experts} experts, top-{m.top_k}, {len(m.moe_layers)} MoE layers, "
            f"hidden {m.hidden_size}, moe_intermediate {m.moe_intermediate_size}", "derived",
            f"from {cfg.model.path}/config.json")
    elif inp.checks:
        out.append(error("KT-E108", inp.model_problem or f"{cfg.model.path}/config.json could not be read",
                         inp.model_fix or "point model.path at the HuggingFace model directory (it holds config.json)"))
    else:
        out.append(info("KT-I101", "model shape unknown (--no-check): expert-count checks skipped"))
