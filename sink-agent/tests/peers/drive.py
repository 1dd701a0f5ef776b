"""Drives an MCP server over stdio with the official Python SDK and prints what it saw
as one JSON object, so a test can compare a run through toolgate-sink with a direct one.

usage: drive.py everything|filesystem DIR -- COMMAND ARGS...
       drive.py everything|filesystem DIR --url http://HOST:PORT/mcp
DIR is the filesystem server's root (ignored for everything). With --url the server is
reached over streamable HTTP instead of started over stdio.
"""
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


async def elicitation(context, params):
    return types.ElicitResult(action="decline")


async def list_roots(context):
    return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/drive-root", name="drive")])


def dump(result):
    return json.loads(result.model_dump_json(exclude_none=True))


async def sampling(context, params):
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="sampled by the test client"),
        model="test-model",
        stopReason="endTurn",
    )


async def everything(session, out):
    # Tools that depend on the client's capabilities (sampling) are registered once the
    # server has seen `initialized`; list until they show up.
    for _ in range(25):
        names = sorted(t.name for t in (await session.list_tools()).tools)
        if "trigger-sampling-request" in names and "trigger-elicitation-request" in names:
            break
        await asyncio.sleep(0.2)
    out["tools"] = names
    out["echo"] = dump(await session.call_tool("echo", {"message": "hello through the proxy"}))
    out["sum"] = dump(await session.call_tool("get-sum", {"a": 2, "b": 40}))
    out["image"] = dump(await session.call_tool("get-tiny-image", {}))
    progress = []

    async def on_progress(p, total, message):
        progress.append(p)

    out["long"] = dump(await session.call_tool(
        "trigger-long-running-operation", {"duration": 1, "steps": 3},
        progress_callback=on_progress))
    out["progress_notifications"] = len(progress)
    # The server asks the client for a completion while the call is in flight.
    out["sampling"] = dump(await session.call_tool(
        "trigger-sampling-request", {"prompt": "hi", "maxTokens": 5}))
    # ... and for the user's input (elicitation), which this client declines.
    out["elicitation"] = dump(await session.call_tool("trigger-elicitation-request", {}))
    # ... and for its roots.
    out["roots"] = dump(await session.call_tool("get-roots-list", {}))
    out["missing_tool"] = dump(await session.call_tool("no-such-tool", {}))
    out["resources"] = sorted(str(r.uri) for r in (await session.list_resources()).resources)[:5]
    out["prompts"] = sorted(p.name for p in (await session.list_prompts()).prompts)
    await session.send_ping()
    out["ping"] = True


async def filesystem(session, out, root):
    out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
    out["read"] = dump(await session.call_tool("read_text_file", {"path": f"{root}/note.txt"}))
    out["write"] = dump(await session.call_tool(
        "write_file", {"path": f"{root}/written.txt", "content": "should not land"}))
    out["list"] = dump(await session.call_tool("list_directory", {"path": root}))


async def main():
    kind, root = sys.argv[1], sys.argv[2]
    out = {}

    async def run(read, write):
        async with ClientSession(read, write, sampling_callback=sampling,
                                 elicitation_callback=elicitation,
                                 list_roots_callback=list_roots) as session:
            init = await session.initialize()
            out["server"] = init.serverInfo.name
            if kind == "everything":
                await everything(session, out)
            else:
                await filesystem(session, out, root)

    if "--url" in sys.argv:
        url = sys.argv[sys.argv.index("--url") + 1]
        async with streamable_http_client(url) as (read, write, _):
            await run(read, write)
    else:
        command = sys.argv[sys.argv.index("--") + 1:]
        params = StdioServerParameters(command=command[0], args=command[1:])
        async with stdio_client(params) as (read, write):
            await run(read, write)
    print(json.dumps(out, sort_keys=True))


asyncio.run(main())
