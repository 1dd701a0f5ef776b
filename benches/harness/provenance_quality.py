#!/usr/bin/env python3
"""How the `provenance` detector (alone, and all detectors together) separates AgentDojo
runs whose attack succeeded from benign runs: per suite and attack type, and per
suite and injection task.

    cargo build --release && python3 benches/harness/provenance_quality.py

Runs `toolgate import agentdojo` over the shared archive and `toolgate eval` with
`--by suite+attack_type --by suite+injection_task`, then prints Markdown tables from
the JSON report's `by_label_and_detector`. Needs ../shared/datasets beside the
repository; writes under a temporary directory (or --work DIR).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "toolgate")
ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "agentdojo",
                       "runs-workspace-travel-banking.tar.gz")


def run(args):
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr}")


def pct(flagged, sessions):
    return "-" if sessions == 0 else f"{100 * flagged / sessions:.1f} % ({flagged}/{sessions})"


def table(title, groups, detector):
    print(f"\n### {title}\n")
    print("| group | successful attacks flagged (provenance) | all detectors | benign flagged (provenance) | all detectors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in sorted(groups):
        per = groups[name]
        prov, allx = per[detector], per["__all__"]
        s, b = prov["attack_succeeded"], prov["benign"]
        if s["sessions"] == 0 and b["sessions"] == 0:
            continue
        print(f"| {name} | {pct(s['flagged'], s['sessions'])} | "
              f"{pct(allx['attack_succeeded']['flagged'], allx['attack_succeeded']['sessions'])} | "
              f"{pct(b['flagged'], b['sessions'])} | "
              f"{pct(allx['benign']['flagged'], allx['benign']['sessions'])} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", help="directory for the generated files")
    args = parser.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="toolgate-provenance-")
    os.makedirs(work, exist_ok=True)
    events = os.path.join(work, "events.jsonl.gz")
    report_path = os.path.join(work, "eval.json")
    if not os.path.exists(events):
        run([BIN, "import", "agentdojo", "--input", ARCHIVE, "--output", events])
    run([BIN, "eval", "--input", events, "--by", "suite+attack_type",
         "--by", "suite+injection_task", "--json", report_path])
    report = json.load(open(report_path))
    overall = report["by_detector"]["provenance"]
    alld = report["all_detectors"]
    print("| scope | successful attacks flagged | benign runs flagged |")
    print("| --- | ---: | ---: |")
    for name, s in [("provenance", overall), ("all detectors", alld)]:
        print(f"| {name} | {pct(s['attack_succeeded']['flagged'], s['attack_succeeded']['sessions'])} | "
              f"{pct(s['benign']['flagged'], s['benign']['sessions'])} |")
    for label in ["suite+attack_type", "suite+injection_task"]:
        groups = {}
        for value, detectors in report["by_label_and_detector"][label].items():
            detectors = dict(detectors)
            detectors["__all__"] = report["by_label"][label][value]
            groups[value] = detectors
        table(f"by {label}", groups, "provenance")
    print(f"\n(files in {work})")


if __name__ == "__main__":
    main()
