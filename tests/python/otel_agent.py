"""Replays recorded toolgate events as an OpenTelemetry-instrumented agent would trace
them, with the official Python SDK and its OTLP/HTTP exporter (protobuf): one
`invoke_agent` span per session, and under it one `execute_tool` span per tool call,
from the call's time to its result's, carrying the GenAI semantic conventions'
attributes (gen_ai.tool.name, gen_ai.tool.call.id, gen_ai.tool.call.arguments,
gen_ai.tool.call.result, gen_ai.conversation.id, gen_ai.agent.id) and the server as
server.address. Prints the number of tool spans exported."""

import argparse
import json
import sys
from datetime import datetime

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode


def nanos(rfc3339):
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1e9)


def result_text(result):
    parts = [c.get("text", "") for c in result.get("content", []) if c.get("type") == "text"]
    return "\n".join(parts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--events", required=True)
    options = parser.parse_args()
    events = [json.loads(line) for line in open(options.events, encoding="utf-8")]
    results = {e["call_id"]: e for e in events if e["kind"] == "tool_result"}
    provider = TracerProvider(resource=Resource.create({"service.name": "agentdojo-replay"}))
    exporter = OTLPSpanExporter(endpoint=options.endpoint, timeout=30)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("toolgate-test")
    sessions = {}
    for e in events:
        sessions.setdefault(e["session_id"], []).append(e)
    exported = 0
    for session, session_events in sessions.items():
        calls = [e for e in session_events if e["kind"] == "tool_call" and e["call_id"] in results]
        if not calls:
            continue
        first, last = nanos(session_events[0]["time"]), nanos(session_events[-1]["time"])
        agent = calls[0]["agent_id"]
        root = tracer.start_span(
            "invoke_agent",
            start_time=first,
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent},
        )
        context = trace.set_span_in_context(root)
        for call in calls:
            result = results[call["call_id"]]
            span = tracer.start_span(
                f"execute_tool {call['tool']}",
                context=context,
                kind=trace.SpanKind.INTERNAL,
                start_time=nanos(call["time"]),
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": call["tool"],
                    "gen_ai.tool.call.id": call["call_id"],
                    "gen_ai.tool.call.arguments": json.dumps(call["arguments"]),
                    "gen_ai.tool.call.result": result_text(result["result"]),
                    "gen_ai.conversation.id": session,
                    "gen_ai.agent.id": agent,
                    "server.address": call["server"],
                },
            )
            if result["result"].get("isError"):
                span.set_status(Status(StatusCode.ERROR, "the tool failed"))
            span.end(end_time=nanos(result["time"]))
            exported += 1
        root.end(end_time=last)
    provider.force_flush()
    provider.shutdown()
    print(exported)
    return 0


if __name__ == "__main__":
    sys.exit(main())
