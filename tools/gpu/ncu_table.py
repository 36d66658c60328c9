#!/usr/bin/env python3
"""Summarises tools/gpu/cuda_ncu.sh's CSV: the kernels of the last decode step (between the last two launches of
the embedding's dequant_rows kernel before the prefill), their GPU time summed by kernel name, and the step's total.
Usage: ncu_table.py NCU_CSV"""
import csv
import re
import sys
from collections import OrderedDict


def short(name: str) -> str:
    name = re.sub(r"quatre::cuda::(\(anonymous namespace\)::)?", "", name)
    name = re.sub(r"<(.{60}).*>", r"<\1...>", name)
    return name[:90]


def main(path: str) -> None:
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "nsecond")
        v = float(r["Metric Value"].replace(",", ""))
        us = v / 1000 if unit.startswith("n") else v if unit.startswith("u") else v * 1000
        rows.append((r["Kernel Name"], us))
    starts = [i for i, (n, _) in enumerate(rows) if "dequant_rows" in n]
    if len(starts) < 4:
        print(f"{len(rows)} kernels, {len(starts)} embedding launches: no whole decode step found")
        return
    # Embedding launches: one a step (3 decode steps, then the prefill's): the last decode step is [starts[2], starts[3]).
    step = rows[starts[2]:starts[3]]
    by = OrderedDict()
    for n, us in step:
        k = short(n)
        c, t = by.get(k, (0, 0.0))
        by[k] = (c + 1, t + us)
    total = sum(us for _, us in step)
    print(f"{'kernel':90} {'calls':>5} {'us':>9} {'share':>6}")
    for k, (c, t) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        print(f"{k:90} {c:5d} {t:9.1f} {t / total * 100:5.1f}%")
    print(f"step: {len(step)} kernels, {total:.1f} us of GPU time")


if __name__ == "__main__":
    main(sys.argv[1])
