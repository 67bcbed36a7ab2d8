#!/usr/bin/env python3
"""Per-item times and ratios from a pytest-benchmark JSON file, one table per group.

    python -m pytest bench --benchmark-enable --benchmark-json=bench.json
    python tools/bench-ratios.py bench.json

Benchmarks that process many items record the count in extra_info (otps, steps or count);
the per-item time is the benchmark's minimum divided by it (minimum: the least disturbed
round on a shared machine). Ratios are against the fastest entry of the group.
"""
import json
import sys
from collections import defaultdict


def per_item(bench):
    info = bench.get("extra_info", {})
    n = info.get("otps") or info.get("steps") or info.get("count") or 1
    return bench["stats"]["min"] / n, n


def fmt_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-12:.3g} ps"


def main(path):
    with open(path) as f:
        data = json.load(f)
    groups = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or bench["name"]].append(bench)
    for group in sorted(groups):
        rows = sorted(((per_item(b), b["name"]) for b in groups[group]), key=lambda r: r[0][0])
        best = rows[0][0][0]
        print(f"\n{group}")
        for (t, n), name in rows:
            rate = f"{1 / t / 1e6:,.1f} M/s" if n > 1 else ""
            print(f"  {name:<60} {fmt_time(t):>10}/item  x{t / best:8.1f} slower  {rate}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
