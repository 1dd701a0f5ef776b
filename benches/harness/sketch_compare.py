#!/usr/bin/env python3
"""MinHash sketching throughput, per core, in one run: toolgate's one-permutation
kernel and the `gaoya` crate (criterion, `cargo bench --bench provenance -- sketch`)
beside Python `datasketch`'s `MinHash.bulk`, all over the same normal-form text
(every 8-byte window is one shingle) and 64 hash values per sketch.

    python3 benches/harness/sketch_compare.py

Creates (or reuses) a virtualenv under target/bench-venv with the pinned
requirements-sketch.txt. Prints a Markdown table for BENCHMARKS.md.
"""
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.join(ROOT, "target", "bench-venv")
REQUIREMENTS = os.path.join(ROOT, "benches", "harness", "requirements-sketch.txt")
INPUT = os.path.join(ROOT, "target", "provenance-sketch-input.txt")
SHINGLE = 8
NUM_PERM = 64


def venv_python():
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", REQUIREMENTS], check=True)
    return python


DATASKETCH = r"""
import sys, time
from datasketch import MinHash
data = open(sys.argv[1], 'rb').read()
shingles = [data[i:i + %(shingle)d] for i in range(len(data) - %(shingle)d + 1)]
batch = [shingles] * 20
MinHash.bulk(batch[:2], num_perm=%(perm)d)
best = None
for _ in range(5):
    start = time.perf_counter()
    MinHash.bulk(batch, num_perm=%(perm)d)
    elapsed = time.perf_counter() - start
    best = elapsed if best is None else min(best, elapsed)
print(len(shingles) * len(batch) / best)
""" % {"shingle": SHINGLE, "perm": NUM_PERM}


def criterion():
    proc = subprocess.run(
        ["cargo", "bench", "--bench", "provenance", "--", "sketch"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    rates = {}
    current = None
    for line in proc.stdout.splitlines():
        name = re.match(r"^(sketch/\S+)", line)
        if name:
            current = name.group(1)
        thrpt = re.search(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+)", line)
        if thrpt and current and current not in rates:
            value, unit = float(thrpt.group(1)), thrpt.group(2)
            scale = {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}[unit]
            rates[current] = value * scale
    return rates


def main():
    rates = criterion()
    python = venv_python()
    out = subprocess.run([python, "-c", DATASKETCH, INPUT], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    rates["datasketch MinHash.bulk (Python)"] = float(out.stdout.strip())
    ours = rates["sketch/toolgate_one_permutation"]
    size = os.path.getsize(INPUT)
    print(f"{size} bytes of normal form, {NUM_PERM} values per sketch, one core\n")
    print("| implementation | shingles/s | toolgate is |")
    print("| --- | ---: | ---: |")
    for name, rate in sorted(rates.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {rate / 1e6:,.1f} M | {ours / rate:,.1f}x |")


if __name__ == "__main__":
    main()
