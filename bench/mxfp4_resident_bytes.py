"""How many bytes kt-kernel 0.7.2's MXFP4 kernel keeps in RAM per routed expert (issue 24 item 5: DeepSeek-V4-Flash's
RAM). Loads E experts of DeepSeek-V4-Flash's shape (hidden 4096, intermediate 2048, FP4 E2M1 + one scale per 32) into
the selected MXFP4 class, exactly as kt_kernel/utils/amx.py NativeMoEWrapper.load_weights does (bf16 scales from the
loader's ue8m0 conversion), frees the Python-side tensors, and reports the growth of the process's anonymous RSS per
expert against the checkpoint's 0.53125 B/param and a 0.625 B/param (FP32 scales) layout.

With a third argument `forward`, the last layer then runs forwards of 1 and 64 tokens and the growth after each is
reported too: kt-kernel's shared run buffers only, no per-expert repacking at first use.

Run in the backend interpreter: `python bench/mxfp4_resident_bytes.py [experts] [layers] [forward]`; the last line is the
result as JSON (tests/backend/test_mxfp4_ram.py reads it). Set MALLOC_MMAP_THRESHOLD_=65536 to see the kernel's bytes
alone (the loader's freed staging returned to the OS), unset for glibc's default."""

import gc
import json
import sys

import torch
from kt_kernel import kt_kernel_ext

H, I, GS = 4096, 2048, 32
LAYERS = 4


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")


def main() -> None:
    experts = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    n_layers = int(sys.argv[2]) if len(sys.argv) > 2 else LAYERS
    forward = len(sys.argv) > 3 and sys.argv[3] == "forward"
    wp = kt_kernel_ext.WorkerPoolConfig()
    wp.subpool_count = 1
    wp.subpool_numa_map = [0]
    wp.subpool_thread_count = [2]
    cpu = kt_kernel_ext.CPUInfer(wp)
    gen = torch.Generator().manual_seed(0)

    def one(n, k):
        w = [torch.randint(0, 256, (n, k // 2), generator=gen, dtype=torch.uint8) for _ in range(experts)]
        e = [torch.randint(118, 124, (n, k // GS), generator=gen, dtype=torch.int32) for _ in range(experts)]
        s = [(x << 7).to(torch.int16).view(torch.bfloat16).contiguous() for x in e]
        return w, s

    params = 3 * H * I
    cls = getattr(kt_kernel_ext.moe, "AMXFP4_KGroup_MOE", None) or kt_kernel_ext.moe.AVX2MXFP4_MOE
    layers, grown = [], []
    for layer in range(n_layers):  # later layers grow by their weights alone (kt-kernel's buffers are shared)
        gc.collect()
        before = rss_anon()
        (gw, gs), (uw, us), (dw, ds) = one(I, H), one(I, H), one(H, I)
        mask = torch.zeros(experts, dtype=torch.bool)
        cfg = kt_kernel_ext.moe.MOEConfig(experts, 6, H, I, mask.data_ptr())
        cfg.layer_idx = layer
        cfg.pool = cpu.backend_
        cfg.max_len = 64 if forward else 1
        cfg.gate_projs, cfg.up_projs, cfg.down_projs = ([[t.data_ptr() for t in x]] for x in (gw, uw, dw))
        cfg.gate_scales, cfg.up_scales, cfg.down_scales = ([[t.data_ptr() for t in x]] for x in (gs, us, ds))
        cfg.quant_config.bits = 4
        cfg.quant_config.group_size = GS
        cfg.quant_config.zero_point = False
        moe = cls(cfg)
        p2l = torch.arange(experts, dtype=torch.int64)
        cpu.submit(moe.load_weights_task(p2l.data_ptr()))
        cpu.sync()
        del gw, gs, uw, us, dw, ds
        gc.collect()
        layers.append((moe, mask))
        grown.append(rss_anon() - before)
    after_forward = []
    if forward:  # the last layer, one and 64 tokens (6 random experts each), as NativeMoEWrapper's forward_task
        moe = layers[-1][0]
        base = rss_anon()
        for q in (1, 64):
            x = torch.randn(q, H, generator=gen).to(torch.bfloat16)
            out = torch.zeros(q, H, dtype=torch.bfloat16)
            ids = torch.stack([torch.randperm(experts, generator=gen)[:6] for _ in range(q)]).to(torch.int64)
            w = torch.rand(q, 6, generator=gen)
            bsz = torch.tensor([q], dtype=torch.int32)
            cpu.submit(moe.forward_task(bsz.data_ptr(), 6, ids.data_ptr(), w.data_ptr(), x.data_ptr(), out.data_ptr(),
                                        False))
            cpu.sync()
            after_forward.append(rss_anon() - base)
            print(f"after a {q}-token forward: anonymous RSS +{after_forward[-1] / 1e6:.1f} MB since the load "
                  f"({experts} experts hold {grown[-1] / 1e6:.1f} MB)")
    k = __import__("kt_kernel")
    for layer, g in enumerate(grown):
        print(f"{cls.__name__} layer {layer}: {experts} experts, anonymous RSS +{g / 1e6:.1f} MB = "
              f"{g / experts / params:.4f} B/param (checkpoint 0.53125, FP32 scales 0.625); kt-kernel "
              f"{getattr(k, '__version__', '?')}, variant {getattr(k, '__cpu_variant__', '?')}")
    print(json.dumps({"class": cls.__name__, "variant": getattr(k, "__cpu_variant__", "?"),
                      "version": getattr(k, "__version__", "?"), "experts": experts,
                      "bytes_per_expert": [g / experts for g in grown], "after_forward": after_forward}))
    del layers


if __name__ == "__main__":
    main()
