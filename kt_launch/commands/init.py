"""`kt-launch init MODEL_DIR`: a first, commented profile for a model on this host (or a recorded one).

It writes what only the user's files can say and leaves the rest to the resolver:
- `model.path` as given;
- the converted kt CPU weights beside the model that match the method, found by the preflight's own recognisers
  (facts/artifacts.weight_dir_facts, resolve/preflight_weights.layout_method);
- each `--lora` in the profile key its content calls for, with the rank and alpha of its adapter_config.json.
Every other value the resolver derives is written as null, and its comment is the value and reason the real plan
(app.plan_request, the same gather + resolve as `kt-launch check`, run on the draft profile) gives it now.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kt_launch.app import Outcome, Request, plan_request
from kt_launch.commands.common import EXIT_OK, EXIT_PLAN
from kt_launch.core.adapters import AdapterConfig
from kt_launch.core.errors import ConfigError
from kt_launch.core.model import ModelFacts
from kt_launch.core.options import OPTIONS, PASS, Refuse
from kt_launch.facts.artifacts import adapter_dir_facts, file_cache, model_dir_facts, weight_dir_facts
from kt_launch.facts.fileid import identify
from kt_launch.facts.model import ModelConfigError, read_model_facts
from kt_launch.facts.profile import ENV_PREFIX, OWN_ENV
from kt_launch.render.profile_yaml import Line, profile_yaml, scalar
from kt_launch.resolve.methods import (INFERENCE_METHODS, KT_METHOD_FOR_SFT, MOE_LORA_SFT_METHODS, NEEDS_CONVERTED,
                                       SFT_BASE_WEIGHTS,
                                       SFT_FROM_KT_METHOD)
from kt_launch.resolve.memory import cpu_expert_bytes
from kt_launch.resolve.preflight_weights import hf_method, layout_method
from kt_launch.resolve.isa import choose_variant, server_variant_override
from kt_launch.resolve.methods import METHODS, implements, methods_for_shape

# What a --lora path is, by its content, and the profile key that takes it.
EXPERT_ADAPTER = "expert adapter"  # a PEFT dir with routed-expert LoRA tensors: moe_lora.path, sglang-kt
MOE_LORA_FILE = "converted MoE LoRA"  # a torch.save archive (convert_moe_lora.py): moe_lora.path, kt-moe-lora
PEFT = "PEFT LoRA"  # any other adapter dir: lora.paths
FLAVOR_OF = {EXPERT_ADAPTER: "sglang-kt", MOE_LORA_FILE: "kt-moe-lora"}
CONVERTED_LAYOUTS = ("amx", "gguf")  # kt-kernel's own CPU formats; an HF dir beside the model is another model
ORDER = {o.key: i for i, o in enumerate(OPTIONS)}


@dataclass(frozen=True)
class LoraArg:
    path: str
    role: str
    config: AdapterConfig | None


@dataclass(frozen=True)
class Converted:
    """A directory beside the model holding kt-kernel converted expert weights."""

    path: str  # as it goes into the profile: beside MODEL_DIR as the user wrote it
    method: str | None  # None: the AMX bits could not be told from the headers
    numa: tuple[int, ...]  # NUMA partition counts seen (AMX)


def run(args, passthrough) -> int:
    if passthrough:
        raise ConfigError("kt-launch init takes no arguments after `--`")
    out = args.output
    if out is not None and os.path.lexists(out) and not args.force:
        raise ConfigError(f"-o {out}: the file exists; kt-launch init does not overwrite it (add --force to replace "
                          "it)")
    model_dir = _utf8("MODEL_DIR", args.model_dir)
    if out is not None:
        _not_over_the_model(out, [model_dir, *args.lora])
    model = _model(model_dir)
    loras = [_lora(_utf8("--lora", p)) for p in args.lora]
    fixed = _choose(model_dir, model, loras, _method(args.method))
    outcome = _plan(fixed, args.host_facts)
    variant = _variant(outcome)
    picked = fixed.get("kt.method")
    if args.method is None and picked is not None and variant is not None and not implements(variant, picked.value):
        # converted weights beside the model for a method this CPU's kt-kernel lacks: read the checkpoint instead
        again = _choose(model_dir, model, loras, None, checkpoint_only=True,
                        note=f"{picked.value} weights are beside the model, but kt-kernel's {variant} variant on "
                             f"this CPU does not implement {picked.value}")
        if again.get("kt.method") is not None:
            fixed, outcome = again, _plan(again, args.host_facts)
    lines = _lines(fixed, outcome, "moe_lora.path" in fixed)
    text = profile_yaml(_header(model_dir, out, args.host_facts, outcome), lines)
    if out is None:
        sys.stdout.write(text)
    else:
        _write(out, text)
        sys.stderr.write(f"kt-launch: wrote {out} ({verdict(outcome)}); check it with: kt-launch check --profile "
                         f"{out}\n")
    if not outcome.ok:
        sys.stderr.write("kt-launch: the profile's plan has errors (listed at the top of it); fix them before a "
                         "launch\n")
    return EXIT_OK if outcome.ok else EXIT_PLAN


# -- what the user gave -----------------------------------------------------------------------

def _utf8(what: str, path: str) -> str:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} {path!r}: the path is not valid UTF-8; a profile cannot hold it") from None
    return path


def _model(model_dir: str) -> ModelFacts:
    node = identify(model_dir)
    if node.kind != "directory":
        raise ConfigError(f"MODEL_DIR {model_dir}: {_what(node)}; give the HuggingFace model directory (config.json "
                          "and safetensors)")
    try:
        return read_model_facts(model_dir)
    except ModelConfigError as e:
        raise ConfigError(f"MODEL_DIR {model_dir}: {e}") from None


def _what(node) -> str:
    """What a path is that should have been a directory, in words."""
    if node.kind in ("missing", "special", "unreadable", "symlink-loop") and node.detail:
        return node.detail
    return f"{node.describe()}, not a directory"


def _lora(path: str) -> LoraArg:
    """Its role by content: expert-LoRA tensors in the adapter file, a torch.save archive, or a plain PEFT dir."""
    node = identify(path)
    if node.is_torch:  # its rank and alpha: adapter_config.json of a --lora dir or beside it (the resolver looks)
        return LoraArg(path, MOE_LORA_FILE, None)
    if node.kind != "directory":
        raise ConfigError(f"--lora {path}: {_what(node)}; give a LoRA adapter dir (adapter_config.json + "
                          "adapter_model.safetensors) or a converted MoE-LoRA .pt")
    facts = adapter_dir_facts(path, file_cache())
    if facts.config is None:
        raise ConfigError(f"--lora {path}: no adapter_config.json in the directory; the LoRA's rank and alpha come "
                          "from it")
    if facts.config.problem:
        raise ConfigError(f"--lora {path}: {facts.config.problem}")
    return LoraArg(path, EXPERT_ADAPTER if facts.expert_lora else PEFT, facts.config)


def _method(text: str | None) -> str | None:
    if text is None:
        return None
    m = text.strip().upper()
    known = (*INFERENCE_METHODS, "AMXBF16", *MOE_LORA_SFT_METHODS)
    if m not in known:
        raise ConfigError(f"--method {text}: not a kt-kernel 0.7.2 method; use one of {', '.join(known)}")
    return m


def _moe(loras: list[LoraArg]) -> LoraArg | None:
    moe = [lo for lo in loras if lo.role != PEFT]
    if len(moe) > 1:
        raise ConfigError("--lora: " + " and ".join(f"{lo.path} ({lo.role})" for lo in moe) + " are both MoE-expert "
                          "LoRAs; a profile serves one (moe_lora.path)")
    return moe[0] if moe else None


# -- the weights beside the model --------------------------------------------------------------

def converted_beside(model_dir: str, model: ModelFacts) -> list[Converted]:
    """Directories next to MODEL_DIR that hold kt-kernel converted weights (AMX or GGUF), by their content.
    Only directories with a .safetensors, a .gguf or a _layer_* dir at their top are opened further."""
    parent = os.path.normpath(os.path.join(model_dir, os.pardir))
    try:
        with os.scandir(parent) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return []
    cache = file_cache()
    found = []
    for e in entries:
        path = os.path.normpath(os.path.join(parent, e.name))
        if not _dir(e) or _same(path, model_dir) or not _worth_a_look(path):
            continue
        w = weight_dir_facts(path, cache)
        if w.looks_like in CONVERTED_LAYOUTS:
            found.append(Converted(path, layout_method(w, model), tuple(sorted(set(w.amx_numa.values())))))
    return found


def _dir(e: os.DirEntry) -> bool:
    try:
        return e.is_dir()
    except OSError:
        return False


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _worth_a_look(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name.endswith((".safetensors", ".gguf")) or e.name.startswith("_layer_"):
                    return True
    except OSError:
        pass
    return False


# -- the values init sets ------------------------------------------------------------------------

def _variant(outcome: Outcome) -> str | None:
    """The kt-kernel CPU variant the planned host loads (None: its CPU flags are not known)."""
    if not outcome.host.cpu.flags:
        return None
    override = server_variant_override(outcome.inputs)[0] if outcome.inputs is not None else None
    return choose_variant(outcome.host.cpu.flags, override).variant


def _choose(model_dir: str, model: ModelFacts, loras: list[LoraArg], method: str | None,
            checkpoint_only: bool = False, note: str = "") -> dict[str, Line]:
    """The keys init writes (key -> line): values only the files can say, and nulls with a note of init's own.
    Everything else stays out of the draft for the resolver to derive."""
    moe = _moe(loras)
    found = [] if checkpoint_only else converted_beside(model_dir, model)
    known = [c for c in found if c.method is not None]
    why = "from --method"
    if method is None and len(known) == 1 and (moe is None or known[0].method in SFT_FROM_KT_METHOD):
        method, why = known[0].method, f"the layout of {known[0].path}, the one converted weight dir beside the model"
    elif method is None and not found and moe is None:
        method, why = _from_checkpoint(model_dir, model)
        why = f"{note}; {why}" if note and method else why
    fixed = {"model.path": Line("model.path", model_dir, "as given to kt-launch init")}
    wants = _method_lines(fixed, method, why, moe)
    weights = _weights_line(found, wants, undecided=method is None)
    if weights is not None:
        fixed[weights.key] = weights
    peft = [lo for lo in loras if lo.role == PEFT]
    if peft:
        fixed["lora.paths"] = Line("lora.paths", [lo.path for lo in peft], "; ".join(
            f"{lo.path}: {lo.role}, r={lo.config.r}, lora_alpha={lo.config.lora_alpha}" for lo in peft if lo.config)
            + " (SGLang reads adapter_config.json)")
    return fixed


def _from_checkpoint(model_dir: str, model: ModelFacts) -> tuple[str | None, str]:
    """No converted weights beside the model: the method that reads the experts model.path holds as they are
    (BF16, FP8, RAWINT4, GPTQ_INT4: the method table's HF readers, on every CPU variant), and what converting to
    AMXINT8/AMXINT4 would buy, from the RAM plan's per-expert bytes (resolve/memory.cpu_expert_bytes)."""
    exp = model_dir_facts(model_dir, file_cache()).experts
    if not exp.count:
        return None, ""
    method = hf_method(exp)
    if method not in METHODS or METHODS[method].reads != "hf":
        return None, ""
    n = model.num_experts * len(model.moe_layers)
    h, i = model.hidden_size, model.moe_intermediate_size

    def gib(m: str) -> float:
        got = cpu_expert_bytes(m, h, i)
        return got[0] * n / (1 << 30) if got else 0.0

    def size(g: float) -> str:
        return f"{g:.1f} GiB" if g >= 1 else f"{g * 1024:.1f} MiB"

    now = gib(method)
    why = (f"the experts in model.path are {method}: kt-kernel reads them from the checkpoint, nothing to convert "
           f"({size(now)} of RAM for the CPU experts)")
    buys = [f"{m} {size(gib(m))}, about {now / gib(m):.1f}x less RAM and memory traffic per decoded token"
            for m in ("AMXINT8", "AMXINT4") if method in METHODS[m].convert_from and gib(m)
            and m in methods_for_shape(None, h, i, 1, (m,))]
    if buys:
        why += ("; `kt-launch convert --profile THIS_FILE --out DIR` (on an AVX-512 or AMX CPU) would give "
                + ", ".join(buys) + ": then set kt.method and kt.weight_path")
    return method, why


def _method_lines(fixed: dict[str, Line], method: str | None, why: str, moe: LoraArg | None) -> str | None:
    """kt.method, or the MoE LoRA's keys and flavour; returns the method whose converted weights kt-kernel reads
    from kt.weight_path (None: it reads model.path, or no method is known)."""
    if moe is None:
        if method in MOE_LORA_SFT_METHODS or method == "AMXBF16":
            raise ConfigError(f"--method {method} is an SFT method: it needs a MoE-expert LoRA (--lora)")
        if method is not None:
            fixed["kt.method"] = Line("kt.method", method, why)
        return method if method in NEEDS_CONVERTED or method == "LLAMAFILE" else None
    sft = method if method in MOE_LORA_SFT_METHODS else SFT_FROM_KT_METHOD.get(method or "AMXBF16")
    if sft is None:
        raise ConfigError(f"--method {method} has no SFT variant for a MoE-expert LoRA; use one of "
                          f"{', '.join(MOE_LORA_SFT_METHODS)}")
    flavor = FLAVOR_OF[moe.role]
    fixed["moe_lora.path"] = Line("moe_lora.path", moe.path, f"{moe.role}; read by {flavor}")
    fixed["moe_lora.sft_method"] = Line("moe_lora.sft_method", sft, why if method else "the default: reads the BF16 "
                                        "experts of model.path (AMXINT8_SFT and AMXINT4_SFT read converted weights)")
    fixed["runtime.flavor"] = Line("runtime.flavor", flavor, f"the flavour that reads this {moe.role}")
    return KT_METHOD_FOR_SFT[sft] if SFT_BASE_WEIGHTS[sft] == "kt.weight_path" else None


def _weights_line(found: list[Converted], wants: str | None, undecided: bool) -> Line | None:
    """kt.weight_path: the first dir beside the model converted for `wants`, else a null that says what is there
    (when no method was decided) or that nothing is (when the method needs converted weights)."""
    matches = [c for c in found if wants is not None and c.method == wants]
    if matches:
        others = ", ".join(c.path for c in matches[1:])
        numa = "/".join(map(str, matches[0].numa)) or "-"
        return Line("kt.weight_path", matches[0].path, f"{wants} weights beside the model (NUMA partitions: {numa})"
                    + (f"; also beside it: {others}" if others else ""))
    if found and undecided:
        return Line("kt.weight_path", None, "converted weights beside the model: " + ", ".join(
            f"{c.path} ({c.method or 'AMX, bits unclear'})" for c in found) + "; pick one with --method M")
    if wants is not None:
        return Line("kt.weight_path", None, f"no {wants} weights beside the model: `kt-launch convert --profile THIS_FILE "
                    "--out DIR` writes them; set the dir here")
    return None


# -- the plan of the draft, and the text -------------------------------------------------------------

def _plan(fixed: dict[str, Line], host_facts: str | None) -> Outcome:
    """The real plan of the draft profile: written to a temp file and planned like `kt-launch check` does. Profile
    keys from KT_LAUNCH_* variables are left out: they describe this shell, not the profile."""
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX) or k in OWN_ENV}
    with tempfile.TemporaryDirectory(prefix="kt-launch-init-") as d:
        draft = Path(d) / "profile.yaml"
        draft.write_text(profile_yaml([], list(fixed.values())), encoding="utf-8")
        return plan_request(Request(profile=str(draft), host_facts=host_facts), environ)


def _lines(fixed: dict[str, Line], outcome: Outcome, moe: bool) -> list[Line]:
    values = outcome.plan.values
    lines = [ln if ln.value is not None else _hinted(ln, values.get(ln.key)) for ln in fixed.values()]
    for key in ("moe_lora.rank", "moe_lora.alpha"):  # from adapter_config.json, as the resolver found it
        r = values.get(key)
        if moe and r is not None and r.value is not None:
            lines.append(Line(key, r.value, r.reason))
    written = {ln.key for ln in lines}
    for o in OPTIONS:
        r = values.get(o.key)
        if o.key in written or r is None or not o.settable or not o.nullable or (o.resolve == PASS):
            continue
        if (o.section == "moe_lora" and not moe) or isinstance(o.render.get(outcome.plan.flavor), Refuse):
            continue  # a key this flavour cannot take stays out of the file
        lines.append(Line(o.key, None, resolves_to(r)))
    if "runtime.flavor" not in written and "runtime.flavor" in values:
        lines.append(Line("runtime.flavor", "auto", resolves_to(values["runtime.flavor"])))
    return sorted(lines, key=lambda ln: ORDER.get(ln.key, len(ORDER)))


def _hinted(ln: Line, r) -> Line:
    """A null that init wrote on purpose: what the plan resolves it to, then init's own note."""
    return Line(ln.key, None, f"{resolves_to(r)}; {ln.comment}" if r is not None else ln.comment)


def resolves_to(r) -> str:
    return f"-> {scalar(r.value) if r.value is not None else 'unset'} ({r.source}): {r.reason}"


def verdict(outcome: Outcome) -> str:
    errors = sum(f.level == "error" for f in outcome.findings)
    warnings = sum(f.level == "warning" for f in outcome.findings)
    if errors:
        return f"BLOCKED: {errors} error(s)"
    return f"OK, {warnings} warning(s)" if warnings else "OK"


def _header(model_dir: str, out: str | None, host_facts: str | None, outcome: Outcome) -> list[str]:
    where = f"the host recorded in {host_facts}" if host_facts else "this machine"
    head = [f"yaml-language-server: $schema={schema_ref(out)}",
            f"A first profile for {model_dir} on {where}, written by `kt-launch init`.",
            "A null value is derived at every launch from the host and the files; its comment says what it is here now.",
            f"Plan now: {verdict(outcome)}"]
    head += [f"  {f.level.upper()} {f.code}: {f.message}" for f in outcome.findings if f.level in ("error", "warning")]
    return head + [f"Check it: kt-launch check --profile {out or 'FILE'}"]


def schema_ref(out: str | None) -> str:
    """The committed schema (schema/profile.schema.json of a source checkout, or one shipped in the package):
    relative to the profile's directory when both are in one tree, else absolute; just the file name when there
    is none to point at (`kt-launch schema -o profile.schema.json` writes it)."""
    here = Path(__file__).resolve().parent
    base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
    for cand in (here.parent / "schema" / "profile.schema.json", here / "schema" / "profile.schema.json"):
        if cand.is_file():
            shared = os.path.commonpath([str(cand), base])
            return os.path.relpath(cand, base) if shared != os.path.dirname(shared) else str(cand)
    return "profile.schema.json"


def _not_over_the_model(out: str, dirs: list[str]) -> None:
    """-o never replaces a file of the model or an adapter it reads (`-o MODEL_DIR/config.json --force` replaced the
    checkpoint's own config): an existing output whose real path (links followed) is inside MODEL_DIR or a --lora
    dir is refused, --force or not."""
    if not os.path.lexists(out):
        return
    real = os.path.realpath(out)
    for d in dirs:
        root = os.path.realpath(d)
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            raise ConfigError(f"-o {out}: is a file of {d} ({real}); kt-launch init never writes over the model's or "
                              "an adapter's files, --force or not: write the profile beside them, e.g. -o my.yaml")


def _write(out: str, text: str) -> None:
    from kt_launch.facts.cache import write_output

    try:
        write_output(out, text)  # atomic for a regular file: the whole profile or no change
    except OSError as e:
        raise ConfigError(f"-o {out}: cannot write ({e.strerror or e}); nothing was written") from None
