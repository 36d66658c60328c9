#!/usr/bin/env python3
"""The peer for the prefill's linears: what PyTorch's cuBLAS(Lt)/CUTLASS GEMMs reach on the model's shapes.

On a GPU host (PyTorch with CUDA): one prompt of T tokens through one layer's linears of `mistral-small-4`
(MODEL.md's sizes), as dense BF16 GEMMs (torch.mm), FP8 E4M3 GEMMs with per-tensor scales (torch._scaled_mm, the
W8A8 path vLLM takes), and the routed experts as one grouped BF16 GEMM (torch._grouped_mm, where this PyTorch has
it) over T*4 rows spread evenly over the 128 experts. Prints ms and TFLOP/s per shape and for the layer, to set
beside `quatre-bench --prefill T --profile`'s per-op times on the same card. Not a test: a reference figure.
Usage: python3 tools/gpu/gemm_peer.py [T=8192]
"""
import sys

import torch

T = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
H, DQ, DKV, DR, NH, DN, DV, E, K, I = 4096, 1024, 256, 64, 32, 64, 128, 128, 4, 2048
# (name, N, K) of y[T, N] = x[T, K] · w[N, K]ᵀ, in the order of a layer (MODEL.md §3-4).
DENSE = [
    ("q_a+kv_a", DQ + DKV + DR, H),
    ("q_b", NH * (DN + DR), DQ),
    ("kv_b", NH * (DN + DV), DKV),
    ("o_proj", H, NH * DV),
    ("router", E, H),
    ("shared gate+up", 2 * I, H),
    ("shared down", H, I),
]
dev = torch.device("cuda")


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def row(name, flop, ms):
    print(f"{name:28s} {ms:9.3f} ms {flop / ms / 1e9:8.1f} TFLOP/s")


print(f"== {torch.cuda.get_device_name()} torch {torch.__version__} T={T}")
totals = {"bf16": 0.0, "fp8": 0.0}
for name, n, k in DENSE:
    x = torch.randn(T, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
    flop = 2.0 * T * n * k
    ms = timed(lambda: torch.mm(x, w.t()))
    totals["bf16"] += ms
    row(f"bf16 {name} {n}x{k}", flop, ms)
    try:
        x8, w8 = x.to(torch.float8_e4m3fn), (w * 50).to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev)
        ms = timed(lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
        totals["fp8"] += ms
        row(f"fp8 {name} {n}x{k}", flop, ms)
    except Exception as e:  # a shape _scaled_mm refuses (N or K not a multiple of 16)
        print(f"fp8 {name}: {type(e).__name__}: {str(e)[:80]}")

# The routed experts: T*K rows, an even share an expert, gate+up then down.
rows = T * K // E
routed_flop = 2.0 * T * K * (2 * I * H + H * I)
offs = torch.arange(1, E + 1, device=dev, dtype=torch.int32) * rows
xg = torch.randn(T * K, H, device=dev, dtype=torch.bfloat16)
hg = torch.randn(T * K, I, device=dev, dtype=torch.bfloat16)
w_gu = torch.randn(E, H, 2 * I, device=dev, dtype=torch.bfloat16) * 0.02
w_d = torch.randn(E, I, H, device=dev, dtype=torch.bfloat16) * 0.02
if hasattr(torch, "_grouped_mm"):
    try:
        ms = timed(lambda: (torch._grouped_mm(xg, w_gu, offs=offs), torch._grouped_mm(hg, w_d, offs=offs)))
        totals["bf16"] += ms
        row(f"bf16 routed grouped ({rows} rows x{E})", routed_flop, ms)
    except Exception as e:
        print(f"grouped_mm: {type(e).__name__}: {str(e)[:120]}")
ms = timed(lambda: [(torch.mm(xg[g * rows:(g + 1) * rows], w_gu[g]), torch.mm(hg[g * rows:(g + 1) * rows], w_d[g]))
                    for g in range(E)], reps=5)
row(f"bf16 routed loop ({rows} rows x{E})", routed_flop, ms)
print(f"layer linears: bf16 {totals['bf16']:.2f} ms (dense + grouped), fp8 dense {totals['fp8']:.2f} ms")
