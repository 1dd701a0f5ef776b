#!/usr/bin/env python3
"""Throughput and peak memory of `toolgate import agentdojo` and `toolgate analyze` over
the whole shared AgentDojo dataset, with analyze run side by side on 10 %, 100 % and
300 % of the events: if replay streams, peak memory does not grow with the input.

    cargo build --release && python3 benches/harness/replay_memory.py

Needs ../shared/datasets beside the repository. Writes its files under a temporary
directory (or --work DIR) and prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "toolgate")
ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "agentdojo",
                       "runs-workspace-travel-banking.tar.gz")


def run(args):
    """Runs one command; returns (seconds, peak RSS in MiB as the command reports it).

    The peak comes from toolgate's own summary line (`peak memory: N MiB`, read from
    /proc/self/status VmHWM). getrusage() from here would not do: a child forked from
    Python starts with Python's high-water mark, and Linux keeps it across exec.
    """
    start = time.monotonic()
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr}")
    match = re.search(r"peak memory: ([0-9.]+) MiB", proc.stderr)
    if not match:
        sys.exit(f"no peak memory in the summary of {' '.join(args)}")
    return seconds, float(match.group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", help="directory for the generated files")
    opts = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    work = opts.work or tempfile.mkdtemp(prefix="toolgate-bench-")
    os.makedirs(work, exist_ok=True)
    events = os.path.join(work, "events.jsonl")

    rows = []
    secs, rss = run([BIN, "import", "agentdojo", "--input", ARCHIVE, "--output", events])
    n = sum(1 for _ in open(events, "rb"))
    rows.append(("import agentdojo (36 MB .tar.gz, 31,226 runs)", n, os.path.getsize(events), secs, rss))

    lines = open(events, "rb").readlines()
    inputs = []
    for label, k in (("10 %", 0.1), ("100 %", 1.0), ("300 %", 3.0)):
        path = os.path.join(work, f"events-{label.split()[0]}.jsonl")
        with open(path, "wb") as f:
            whole, part = int(k), k - int(k)
            for _ in range(whole):
                f.writelines(lines)
            f.writelines(lines[: int(len(lines) * part)])
        inputs.append((label, path))
    del lines

    for label, path in inputs:
        secs, rss = run([BIN, "analyze", "--input", path, "--output", os.devnull,
                         "--dead-letter", os.devnull])
        n = sum(1 for _ in open(path, "rb"))
        rows.append((f"analyze, {label} of the events", n, os.path.getsize(path), secs, rss))

    print("| run | events | input | seconds | events/s | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, n, size, secs, rss in rows:
        print(f"| {name} | {n:,} | {size / 2**20:,.0f} MiB | {secs:.1f} | {n / secs:,.0f} | {rss:.1f} MiB |")
    print(f"\n(files in {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
