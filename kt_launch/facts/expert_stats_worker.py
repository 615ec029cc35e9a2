"""The expert-stats worker: runs in the target interpreter (runtime.python), never imported by the launcher.

Reads one request (JSON on stdin) and prints one JSON answer (the last stdout line):

``check``: load a stats file as sglang-kt 0.7.2 does (kt_ep_wrapper.py:4625-4663: ``torch.load(path,
map_location="cpu", weights_only=True)``; a dict with ``logical_count`` or a raw tensor; 3 dims
``[buffer, num_layers, num_experts]``), check it against the model's shape from config.json, the counts
non-negative, finite and not all zero; then, for every GPU-expert budget asked, kt-kernel's own
``generate_gpu_experts_masks`` (kt_kernel/experts_base.py:162-210) over the per-layer sums: the GPU experts per MoE
layer and the share of the recorded routed tokens they serve, beside the uniform mask's share at the same budget
(sglang-kt's generate_uniform_masks, kt_ep_wrapper.py:4411-4457: ``budget // layers`` each, the first
``budget % layers`` MoE layers one more, experts 0..n-1).

``reduce``: the same check, then the sum over the buffer dim written to ``out`` as ``{"logical_count": [1, L, E]}``
(torch.save): what the calibration cache keeps (the recorder's buffer of 1000 passes is ~100 MB; its sum is the
same answer for kt_ep_wrapper, which sums dim 0 itself).

A pickle is never unpickled: ``weights_only=True`` refuses any object but tensors and plain containers.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import json  # noqa: E402
import stat  # noqa: E402

MAX_BYTES = 16 << 30  # a stats file past this is not a recorder's dump (1000 passes of 61 x 384 int32 = 94 MB)


def _answer(d: dict) -> None:
    sys.stdout.write(json.dumps(d, allow_nan=False) + "\n")
    sys.stdout.flush()


def _refuse(problem: str, message: str, **more) -> dict:
    return {"ok": False, "problem": problem, "message": message, **more}


def _load(path: str):
    """The counts tensor of `path`, or a refusal dict."""
    import torch

    try:
        st = os.stat(path)
    except OSError as e:
        return _refuse("not_loadable", f"{path}: cannot be read ({e.strerror or e})")
    if not stat.S_ISREG(st.st_mode):
        return _refuse("not_loadable", f"{path}: not a regular file (a FIFO, device or directory)")
    if st.st_size > MAX_BYTES:
        return _refuse("not_loadable", f"{path}: {st.st_size} bytes, larger than any expert-distribution dump")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # a legacy (non-zip) torch file cannot be mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refusals, truncated zips, not a torch file at all
        first = _reason(str(e))
        return _refuse("not_loadable", f"{path}: torch.load(weights_only=True) refused it: "
                       f"{type(e).__name__}: {first[:300]}")
    if isinstance(data, dict):
        if "logical_count" not in data:
            keys = ", ".join(str(k)[:40] for k in list(data)[:8]) or "none"
            return _refuse("no_logical_count", f"{path}: a dict without 'logical_count' (its keys: {keys}); "
                           "sglang-kt reads the recorder's dict or a raw tensor")
        data = data["logical_count"]
    if not isinstance(data, torch.Tensor):
        return _refuse("not_loadable", f"{path}: holds a {type(data).__name__}, not a tensor of counts")
    return data


def _reason(text: str) -> str:
    """torch's refusal without its boilerplate (the weights_only default, "please file an issue", the docs link)."""
    text = text.split("Check the documentation of torch.load")[0]
    head, default_note, rest = text.partition("In PyTorch 2.6")  # the note on weights_only's default
    if default_note:  # the reason follows the note (an unpickler error) or, when nothing does, precedes it
        after = rest.split("trusted source.", 1)[-1]
        text = after if after.strip() else head
    text = text.split("compatible with your use case:", 1)[-1]
    text = " ".join(text.split())
    return ("Weights only load failed: " + text.removeprefix("WeightsUnpickler error:").strip()
            if "Weights only load failed" not in text and text else text) or "no reason given"


def check(req: dict) -> tuple[dict, object]:
    import torch

    path, layers, experts = req["path"], int(req["num_layers"]), int(req["num_experts"])
    want = f"[*, {layers}, {experts}] ([buffer, num_hidden_layers, num_experts] from config.json)"
    t = _load(path)
    if isinstance(t, dict):
        return t, None
    shape = [int(x) for x in t.shape]
    if t.dim() != 3:
        return _refuse("not_3d", f"{path}: counts of shape {shape}; sglang-kt needs 3 dims, {want}",
                       shape=shape), None
    if shape[1] != layers or shape[2] != experts:
        return _refuse("shape", f"{path}: counts of shape [{shape[0]}, {shape[1]}, {shape[2]}] "
                       f"([buffer, layers, experts]) but the model needs {want}", shape=shape), None
    if t.dtype == torch.bool or t.is_complex():
        return _refuse("not_number", f"{path}: counts of dtype {t.dtype}, not numbers", shape=shape), None
    freq = t.sum(dim=0).double()  # [layers, experts], as kt_ep_wrapper sums dim 0
    if not bool(torch.isfinite(freq).all()):
        return _refuse("not_number", f"{path}: counts that are NaN or infinite", shape=shape), None
    if bool((t < 0).any()):
        return _refuse("negative", f"{path}: negative counts (the smallest is {t.min().item()})", shape=shape), None
    moe = [i for i in req.get("moe_layers") or range(layers) if 0 <= int(i) < layers]
    total = float(freq[moe].sum().item()) if moe else 0.0
    if total <= 0:
        return _refuse("all_zero", f"{path}: every count in the MoE layers is 0 (nothing was recorded: was the "
                       "workload run between start and dump?)", shape=shape), None
    out = {"ok": True, "shape": shape, "total": total, "per_layer": {}, "served": {}, "uniform_served": {}}
    budgets = sorted({int(b) for b in req.get("budgets") or () if int(b) >= 0})
    if budgets:
        _masks(freq, moe, budgets, total, out)
    return out, freq


def _masks(freq, moe: list[int], budgets: list[int], total: float, out: dict) -> None:
    import torch

    try:
        from kt_kernel import generate_gpu_experts_masks
        import kt_kernel
    except Exception as e:  # noqa: BLE001 - an import that fails here fails in the server too
        last = str(e).strip().splitlines()
        out["masks_error"] = f"kt_kernel does not import: {type(e).__name__}: {(last[0] if last else '')[:200]}"
        return
    out["kt_kernel"] = str(getattr(kt_kernel, "__version__", ""))
    layers, experts = freq.shape
    is_moe = torch.zeros(layers, dtype=torch.bool)
    is_moe[moe] = True
    f32 = freq.float()  # what kt_ep_wrapper hands the mask function (.float())
    # uniform: experts 0..n-1 of each MoE layer; prefix sums give any n at once (column 0 = n of 0)
    prefix = torch.cat([torch.zeros(len(moe), 1, dtype=freq.dtype), freq[moe].cumsum(dim=1)], dim=1)
    rows = torch.arange(len(moe))
    for b in budgets:
        masks = generate_gpu_experts_masks(f32, b)
        masks[~is_moe, :] = True  # kt_ep_wrapper: every expert of a non-MoE layer on the GPU (it has none)
        counts = masks[moe].sum(dim=1)
        out["per_layer"][str(b)] = [int(x) for x in counts.tolist()]
        out["served"][str(b)] = float(freq[moe][masks[moe]].sum().item()) / total
        per, rem = divmod(b, len(moe))
        n = ((rows < rem).long() + per).clamp(max=experts)  # generate_uniform_masks: the first `rem` layers one more
        out["uniform_served"][str(b)] = float(prefix[rows, n].sum().item()) / total


def main() -> int:
    try:
        req = json.loads(sys.stdin.read() or "{}")
    except ValueError as e:
        _answer({"ok": False, "problem": "request", "message": f"bad request: {e}"})
        return 2
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        _answer({"ok": False, "problem": "no_torch", "message": f"torch does not import: {type(e).__name__}: {e}"})
        return 0
    ans, freq = check(req)
    if req.get("mode") == "reduce" and ans.get("ok"):
        try:
            torch.save({"logical_count": freq.to(torch.int64).unsqueeze(0)}, req["out"])
            ans["written"] = req["out"]
        except Exception as e:  # noqa: BLE001
            ans = _refuse("write", f"{req['out']}: cannot be written ({type(e).__name__}: {e})")
    _answer(ans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
