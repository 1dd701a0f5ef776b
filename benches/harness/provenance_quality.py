#!/usr/bin/env python3
"""How the `provenance` detector (alone, and all detectors together) separates AgentDojo
runs whose attack succeeded from benign runs: per suite and attack type, and per
suite and injection task.

    cargo build --release && python3 benches/harness/provenance_quality.py

Runs `toolgate import agentdojo` over the shared archive and `toolgate eval` with
`--by suite+attack_type --by suite+injection_task`, then prints Markdown tables from
the JSON report's `by_label_and_detector`. Then runs `toolgate analyze` with provenance
alone and sorts every successful attack it does not flag by cause, from the run's own
events. Needs ../shared/datasets beside the repository; writes under a temporary
directory (or --work DIR).
"""

import argparse
import collections
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "toolgate")
ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "agentdojo",
                       "runs-workspace-travel-banking.tar.gz")

ONLY_PROVENANCE = "".join(
    f"[detectors.{d}]\nenabled = false\n"
    for d in ["definitions", "injection", "secrets", "policy"]
)
# Addresses an egress call can send to: emails, IBAN-shaped accounts, URLs.
ADDRESS = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b|www\.[\w.-]+|https?://[^\s'\"]+", re.I)


def miss_causes(work, events):
    config = os.path.join(work, "provenance-only.toml")
    with open(config, "w") as f:
        f.write(ONLY_PROVENANCE)
    findings = os.path.join(work, "provenance-findings.jsonl")
    run([BIN, "analyze", "-c", config, "--input", events, "--output", findings])
    flagged = set()
    with open(findings) as f:
        for line in f:
            finding = json.loads(line)
            if finding["severity"] != "info":
                flagged.add(finding["session_id"])
    missed = collections.defaultdict(list)
    with gzip.open(events, "rt") as f:
        for line in f:
            e = json.loads(line)
            if e["labels"].get("outcome") == "attack_succeeded" and e["session_id"] not in flagged:
                missed[e["session_id"]].append(e)
    causes = collections.Counter()
    for evs in missed.values():
        user = " ".join(e["text"] for e in evs if e["kind"] == "user_message").lower()
        egress = [e for e in evs if e["kind"] == "tool_call" and e.get("trust_domain") == "external"]
        if not egress:
            causes["no call to an egress tool in the recorded run"] += 1
            continue
        dests = {a.lower() for e in egress for a in ADDRESS.findall(json.dumps(e["arguments"]))}
        def results(domains, inside):
            return " ".join(json.dumps(e["result"]) for e in evs if e["kind"] == "tool_result"
                            and (e.get("trust_domain") in domains) == inside).lower()
        trusted = results(("untrusted", "external"), False)
        untrusted = results(("untrusted",), True)
        if not dests:
            causes["egress calls without an address"] += 1
        elif any(d in user for d in dests):
            causes["the address is in the user's own task"] += 1
        elif any(d in trusted for d in dests):
            causes["the address is in a server the mapping trusts"] += 1
        elif not any(d in untrusted for d in dests):
            causes["the address is in no result"] += 1
        else:
            causes["other"] += 1
    print("\n### successful attacks provenance does not flag, by cause\n")
    print("| cause | runs |")
    print("| --- | ---: |")
    for cause, n in causes.most_common():
        print(f"| {cause} | {n} |")


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
    miss_causes(work, events)
    print(f"\n(files in {work})")


if __name__ == "__main__":
    main()
