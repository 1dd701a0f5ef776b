"""Parses a Prometheus text exposition (stdin) with the Prometheus project's own
client library and prints one line per sample: name, labels, value. Exits non-zero
(with the parser's error) on anything it cannot parse."""

import sys

from prometheus_client.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        print(f"{family.type} {sample.name} {{{labels}}} {sample.value}")
