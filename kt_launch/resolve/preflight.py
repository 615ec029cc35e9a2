"""Preflight rules: the artifacts a launch will read, checked before exec. Pure: facts in, findings out.

Every late failure a file can cause in SGLang or kt-kernel (the seed's bugs among them) is said
here, from headers and magic bytes gathered by `kt_launch.facts.artifacts`. File rules are skipped
under --no-check (no artifacts); CPU, memory and GPU rules run always (`preflight_weights`).

Codes (KT-x2xx, declared in core/codes.py): 200 an artifact not inspected, 201-209 a file as such and
210-219 MoE-LoRA and LoRA dirs (here); 220-228 weights and model dir, 230-232 memory, GPUs, port and 240
the CPU variant (preflight_weights.py); 241 the variant override (verdicts.py); 250-252 a launch on this
machine (launch.py). rules.PREFLIGHT lists the check_* functions of this module and preflight_weights.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from typing import Iterable, Iterator

from kt_launch.core.fileid import DATA_BEYOND_FILE, HEADER_BEYOND_FILE, FileId
from kt_launch.core.findings import Finding, about, error, warning
from kt_launch.resolve.inputs import ResolveInput
from kt_launch.core.profile import lora_entries
from kt_launch.core.plan import Resolved

Values = dict[str, Resolved]

TORCH_EXTS = (".pt", ".pth", ".bin")


def artifacts(inp: ResolveInput):
    return inp.artifacts if inp.checks else None


# -- a file as such ------------------------------------------------------------------------------

def node_findings(field: str, fid: FileId, want: str, fix: str = "") -> list[Finding]:
    """Problems of the path itself: want is "file" or "dir". Empty list when it is the right kind of node.
    Each finding names the key and the file as fields."""
    return about(_node_findings(field, fid, want, fix), key=field, file=fid.path)


def _node_findings(field: str, fid: FileId, want: str, fix: str) -> list[Finding]:
    p, k = fid.path, fid.kind
    if k == "missing":
        why = "" if fid.detail in ("", "does not exist") else f" ({fid.detail})"
        return [error("KT-E201", f"{field}: {p} does not exist{why}", fix or f"fix the path in {field}")]
    if k == "unreadable":
        return [error("KT-E202", f"{field}: {p} is not readable ({fid.detail})",
                      f"give the serving user read access (chmod a+r / a+rx for dirs) or fix {field}")]
    if k == "symlink-loop":
        return [error("KT-E203", f"{field}: {p} is a symlink loop ({fid.detail})",
                      f"point the symlink at the real file: ls -l {p}")]
    if k == "special":
        return [error("KT-E209", f"{field}: {p} is not a regular file or directory", f"fix {field}")]
    if want == "dir" and k != "directory":
        return [error("KT-E215", f"{field}: {p} is {fid.describe()}, but a directory is expected",
                      fix or f"point {field} at the directory that holds the files")]
    if want == "file" and k == "directory":
        return [error("KT-E205", f"{field}: {p} is a directory where a file belongs", fix or f"point {field} at the file")]
    if want == "file" and k == "empty":
        return [error("KT-E204", f"{field}: {p} is empty (0 bytes): an interrupted copy or conversion?",
                      fix or "re-create the file")]
    return []


def safetensors_findings(field: str, fid: FileId, who: str = "SGLang") -> list[Finding]:
    """A file that will be parsed as safetensors (by name or position) but is not a valid one; each finding names
    the key and the file as fields."""
    return about(_safetensors_findings(field, fid, who), key=field, file=fid.path)


def _safetensors_findings(field: str, fid: FileId, who: str) -> list[Finding]:
    if fid.ok_safetensors:
        return []
    node = node_findings(field, fid, "file")
    if node:
        return node
    p = fid.path
    if fid.kind != "safetensors":
        conv = " (a converter's torch.save output named .safetensors?)" if fid.is_torch else ""
        return [error("KT-E206", f"{field}: {p} is named .safetensors but is {fid.describe()}{conv}; {who} will fail "
                      "parsing it (\"Error while deserializing header: header too large\")",
                      f"rename it to .pt and move it out of {posixpath.dirname(p) or '.'}, or re-save it with "
                      "safetensors.torch.save_file" if fid.is_torch else f"remove or replace {p}")]
    if fid.problem in (HEADER_BEYOND_FILE, DATA_BEYOND_FILE):
        return [error("KT-E208", f"{field}: {p} is truncated: {fid.detail}",
                      "copy or download the file again (compare its size with the source)")]
    return [error("KT-E207", f"{field}: {p} has an invalid safetensors header: {fid.detail}",
                  "copy or download the file again, or re-save it with safetensors")]


# -- MoE-LoRA file format per flavour --------------------------------------------------------------

def convert_command(inp: ResolveInput, out: str | None = None) -> str:
    """`kt-launch convert` for this profile: the fix when converted weights or the converted expert LoRA are missing."""
    prof = shlex.quote(inp.profile_path) if inp.profile_path else "<profile>"
    return f"kt-launch convert --profile {prof}" + (f" --out {shlex.quote(out)}" if out else "")


def check_moe_lora_format(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a = artifacts(inp)
    if a is None or inp.config.moe_lora is None or a.moe_lora is None:
        return
    flavor = values["runtime.flavor"].value
    fid = a.moe_lora
    if flavor == "kt-moe-lora":
        yield from _fork_pt(fid, a)
    elif flavor == "sglang-kt":
        yield from _expert_adapter_format(fid, a.moe_lora_dir, convert_command(inp))


def _fork_pt(fid: FileId, a) -> Iterator[Finding]:
    field = "moe_lora.path"
    if fid.kind == "directory" and a.moe_lora_dir is not None and a.moe_lora_dir.config is not None:
        yield error("KT-E210", f"{field}: {fid.path} is an adapter directory, but the kt-moe-lora fork loads the "
                    "converted MoE LoRA with torch.load (a .pt file)",
                    "convert it with the fork's scripts/convert_moe_lora.py --output <outside the checkpoint>/moe_lora.pt, "
                    "or use runtime.flavor: sglang-kt for converted adapter dirs")
        return
    node = node_findings(field, fid, "file", "point moe_lora.path at the converted moe_lora.pt")
    if node:
        yield from node
        return
    if not fid.is_torch:
        what = "a safetensors file (the unconverted adapter?)" if fid.kind == "safetensors" else fid.describe()
        yield error("KT-E210", f"{field}: {fid.path} is {what}; the kt-moe-lora fork loads it with torch.load and "
                    "expects a torch.save archive", "convert the adapter with the fork's scripts/convert_moe_lora.py "
                    "(its output is a torch .pt file)")
        return
    if not fid.path.endswith(TORCH_EXTS):
        yield warning("KT-W206", f"{field}: {fid.path} is {fid.describe()} but its name says otherwise; it loads, but "
                      "any tool that trusts the extension will misread it", f"rename it to {_stem(fid.path)}.pt")


def _stem(p: str) -> str:
    return os.path.splitext(p)[0]


def _expert_adapter_format(fid: FileId, d, convert: str = "kt-launch convert") -> Iterator[Finding]:
    field = "moe_lora.path"
    if fid.kind not in ("directory", "missing", "unreadable", "symlink-loop", "special"):
        seed = " (the kt-moe-lora fork's .pt format)" if fid.is_torch else ""
        yield error("KT-E210", f"{field}: {fid.path} is {fid.describe()}{seed}; sglang-kt 0.7 wants the converted "
                    "expert adapter directory holding adapter_config.json and adapter_model.safetensors",
                    "convert with kt-kernel's convert_kt_to_sglang_adapter.py and point moe_lora.path at its output dir")
        return
    node = node_findings(field, fid, "dir")
    if node or d is None:
        yield from node
        return
    if d.config is None:
        yield error("KT-E216", f"{field}: {d.path} has no adapter_config.json",
                    "use the output dir of convert_kt_to_sglang_adapter.py (it writes adapter_config.json)")
    elif d.config.problem:
        yield error("KT-E217", f"{field}: {d.config.problem}", "fix adapter_config.json (r, lora_alpha, target_modules)")
    main = next((f for f in d.files if os.path.basename(f.path) == "adapter_model.safetensors"), None)
    if main is None:
        if d.fused:
            yield error("KT-E210", f"{field}: {d.path} holds a raw fused_expert_lora.safetensors (training output) and "
                        "no adapter_model.safetensors", f"convert it: {convert} (writes {d.path.rstrip('/')}-sglang with "
                        "kt-kernel's converter), then set moe_lora.path to that dir")
        else:
            yield error("KT-E210", f"{field}: {d.path} has no adapter_model.safetensors",
                        "point moe_lora.path at the converted expert adapter dir")
        return
    bad = safetensors_findings(field, main, "sglang-kt")
    if bad:
        yield from bad
        return
    if not d.expert_lora:
        yield error("KT-E211", f"{field}: {main.path} has no `.mlp.experts.` LoRA tensors; it is not an expert adapter",
                    "pass an ordinary adapter through lora.paths; convert expert LoRA with convert_kt_to_sglang_adapter.py")
    elif d.nonexpert_lora_keys or d.other_keys:
        yield error("KT-E212", f"{field}: {main.path} also holds {d.nonexpert_lora_keys + d.other_keys} non-expert "
                    "tensors; sglang-kt's --kt-expert-lora-path expects an expert-only converted adapter",
                    "pass the merged adapter through lora.paths instead (sglang-kt splits it), or convert with "
                    "--expert-output-dir")


def check_expert_coverage(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    """sglang-kt loads every MoE layer x expert x (gate, up, down) x (A, B) and checks ranks only after load."""
    a, m = artifacts(inp), inp.model
    if a is None or m is None or a.moe_lora_dir is None or not a.moe_lora_dir.expert_lora:
        return
    if values["runtime.flavor"].value != "sglang-kt":
        return
    d = a.moe_lora_dir
    have = d.expert_lora
    missing = [(layer, e, p, ab) for layer in m.moe_layers for e in range(m.num_experts)
               for p in ("gate", "up", "down") for ab in ("A", "B") if (layer, e, p, ab) not in have]
    if missing:
        total = len(m.moe_layers) * m.num_experts * 6
        layers = sorted({x[0] for x in missing})
        show = ", ".join(f"layers.{layer}.mlp.experts.{e}.{p}_proj.lora_{ab}" for layer, e, p, ab in missing[:3])
        yield error("KT-E213", f"moe_lora.path: {d.weights_file} lacks {len(missing)} of the {total} expert LoRA "
                    f"tensors the model needs ({len(m.moe_layers)} MoE layers x {m.num_experts} experts x 6), in "
                    f"layer(s) {_short(layers)}; e.g. {show}", "convert the adapter again from the full training output")
    r_cfg = d.config.r if d.config is not None else None
    ranks: dict[int, int] = {}
    wrong: list[str] = []
    h, i = m.hidden_size, m.moe_intermediate_size
    for (layer, e, p, ab), shape in have.items():
        if len(shape) != 2:
            wrong.append(f"layers.{layer}.mlp.experts.{e}.{p}_proj.lora_{ab} has shape {list(shape)}")
            continue
        r = shape[0] if ab == "A" else shape[1]
        ranks[r] = ranks.get(r, 0) + 1
        other = shape[1] if ab == "A" else shape[0]
        want = (i if p == "down" else h) if ab == "A" else (h if p == "down" else i)
        if other != want and len(wrong) < 3:
            wrong.append(f"layers.{layer}.mlp.experts.{e}.{p}_proj.lora_{ab} is {list(shape)}, the model needs "
                         f"{[r, want] if ab == 'A' else [want, r]}")
    if len(ranks) > 1 or (r_cfg is not None and ranks and set(ranks) != {r_cfg}):
        seen = ", ".join(f"r={r} ({n} tensors)" for r, n in sorted(ranks.items()))
        yield error("KT-E219", f"moe_lora.path: expert LoRA ranks in {d.weights_file} are inconsistent: {seen}"
                    + (f"; adapter_config.json says r={r_cfg}" if r_cfg is not None else ""),
                    "every expert LoRA tensor must share the adapter's rank; convert the adapter again")
    elif wrong:
        yield error("KT-E219", f"moe_lora.path: expert LoRA shapes do not fit {inp.config.model.path} "
                    f"(hidden {h}, moe_intermediate {i}): {'; '.join(wrong[:3])}",
                    "use the adapter trained for this model")


def _short(xs: list[int]) -> str:
    return ", ".join(map(str, xs[:8])) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")


# -- lora.paths ----------------------------------------------------------------------------------

GLOB_ORDER = (".safetensors", ".bin", (".pt", ".pth"))


def _globbed(files: Iterable[FileId]) -> list[FileId]:
    """What SGLang's loader reads from an adapter dir: every match of the first pattern that matches."""
    files = list(files)
    for ext in GLOB_ORDER:
        hit = [f for f in files if f.path.endswith(ext)]
        if hit:
            return hit
    return []


def check_lora_dirs(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a = artifacts(inp)
    if a is None:
        return
    moe_path = os.path.normpath(inp.config.moe_lora.path) if inp.config.moe_lora is not None else None
    for i, (name, path) in enumerate(lora_entries(inp.config)):
        d = a.loras.get(path)
        if d is None:
            continue
        field = f"lora.paths[{i}]" + (f" ({name})" if name else "")
        if d.node.kind != "directory":
            hint = ("--lora-paths expects an adapter directory, not a weight file"
                    if d.node.path.endswith((".safetensors", ".bin", ".pt")) else "")
            yield from node_findings(field, d.node, "dir", f"point {field} at the adapter directory" +
                                     (f" ({posixpath.dirname(path) or '.'}); {hint}" if hint else ""))
            continue
        if d.config is None:
            yield error("KT-E216", f"{field}: {path} has no adapter_config.json; SGLang's LoRAConfig needs it "
                        "(r, lora_alpha, target_modules)", "copy adapter_config.json from the training run into the dir")
        elif d.config.problem or (d.config.peft_type or "").upper() != "LORA":
            why = d.config.problem or f"{d.config.path}: peft_type is {d.config.peft_type!r}, SGLang serves only LORA"
            yield error("KT-E217", f"{field}: {why}", "fix adapter_config.json: peft_type LORA, integer r, lora_alpha, "
                        "target_modules list")
        globbed = _globbed(d.files)
        if not globbed:
            yield error("KT-E218", f"{field}: {path} has no *.safetensors, *.bin or *.pt weight file "
                        "(\"Cannot find any model weights\")", "put adapter_model.safetensors into the dir")
            continue
        for f in globbed:
            if f.path.endswith(".safetensors"):
                yield from safetensors_findings(field, f)
            elif not f.is_torch:  # *.bin / *.pt are read with torch.load
                yield from node_findings(field, f, "file") or [error(
                    "KT-E206", f"{field}: {f.path} is named {os.path.splitext(f.path)[1]} but is {f.describe()}; "
                    "SGLang reads it with torch.load and fails", f"rename it to match its content, or remove it "
                    f"from {path}")]
        yield from _extra_files(field, path, globbed, d.files, moe_path)


def _extra_files(field: str, path: str, globbed: list[FileId], files, moe_path: str | None) -> Iterator[Finding]:
    own = ("adapter_model.safetensors", "adapter_model.bin")
    for f in globbed:
        base = os.path.basename(f.path)
        if base in own or (f.path.endswith(".safetensors") and not f.ok_safetensors):
            continue  # the adapter itself; broken files are reported above
        is_moe = moe_path is not None and os.path.normpath(f.path) == moe_path
        what = "the MoE LoRA file (moe_lora.path)" if is_moe else "an extra weight file"
        yield error("KT-E214", f"{field}: {f.path} is {what} inside the LoRA checkpoint dir; SGLang loads every "
                    f"{os.path.splitext(base)[1] if '.' in base else base} file there and it is not part of this adapter",
                    f"move it out of {path} (e.g. next to the dir)")
    if moe_path is not None and posixpath.dirname(moe_path) == os.path.normpath(path):
        if not any(os.path.normpath(f.path) == moe_path for f in globbed):
            yield warning("KT-W214", f"{field}: moe_lora.path {moe_path} sits inside the LoRA checkpoint dir {path}; "
                          "SGLang does not load it today only because another file pattern matches first",
                          "move the converted MoE LoRA out of the checkpoint dir")


def check_gathering(inp: ResolveInput, values: Values) -> Iterator[Finding]:
    a = artifacts(inp)
    for p in getattr(a, "problems", ()):
        field = p.split(":", 1)[0]
        yield warning("KT-W200", f"preflight could not inspect {p}; its checks were skipped",
                      f"check {field} by hand; please report this message")

