#!/usr/bin/env python3
"""Prints criterion's medians from target/criterion, with ratios against a baseline per group.

    python3 benches/medians.py [group-substring ...]
"""
import json
import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"
wanted = sys.argv[1:]
rows = []
for estimates in sorted(root.glob("**/new/estimates.json")):
    bench = estimates.parent.parent.relative_to(root).as_posix()
    if wanted and not any(w in bench for w in wanted):
        continue
    median = json.loads(estimates.read_text())["median"]["point_estimate"]
    rows.append((bench, median))

def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 10_000 else f"{ns:.0f} ns"

floors = {}
for bench, median in rows:
    parts = bench.split("/")
    if any(p.startswith(("floor", "serde_json_value", "bare_handler", "1_thread")) for p in parts):
        key = (parts[0], parts[-1] if parts[-1].isdigit() else "")
        floors[key] = median
for bench, median in rows:
    parts = bench.split("/")
    base = floors.get((parts[0], parts[-1] if parts[-1].isdigit() else ""))
    ratio = f"{median / base:.2f}×" if base else ""
    print(f"{bench:58} {fmt(median):>10} {ratio:>7}")
