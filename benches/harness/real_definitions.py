#!/usr/bin/env python3
"""How often the `injection` detector flags the definitions of real, published MCP
servers: the benign half of issue 21's "poisoned definitions at <= 1% of real
definitions", which ../shared/datasets cannot measure (its only benign definitions are
InjecAgent's 330 synthetic tools).

    cargo build --release && python3 benches/harness/real_definitions.py --work /tmp/realdefs

Installs the servers from npm and PyPI into --work (the only step that needs the
registries), starts each over stdio with placeholder credentials, asks `tools/list`
(following `nextCursor`), and writes one `tool_list` event per server, each from its
own agent so no cross-server rule fires. Then runs `toolgate analyze` with the default
config and prints, per severity, how many tools got `poisoned_description`, and every
flagged tool with the field and fragment the finding names.

The events it writes (each tool cut to name, title, description and inputSchema) are
what `detectors/models/training/mcp-server-definitions.jsonl` holds: `toolgate train
injection` learns from them as benign definitions, so the shipped model's figure here
is not an unseen one. `toolgate train injection --evaluate` holds servers out.

`--definitions FILE` skips the install and listing and reads a previous run's events.
A server's stderr goes to `--work`/NAME.stderr, to see why one listed nothing.
"""

import argparse
import collections
import glob
import json
import os
import select
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "toolgate")

# Published MCP servers: the reference servers (current and archived) and popular
# vendors' servers. Versions are whatever the registry serves; the run prints them.
NPM = [
    "@modelcontextprotocol/server-filesystem", "@modelcontextprotocol/server-memory",
    "@modelcontextprotocol/server-everything", "@modelcontextprotocol/server-sequential-thinking",
    "@modelcontextprotocol/server-github", "@modelcontextprotocol/server-gitlab",
    "@modelcontextprotocol/server-slack", "@modelcontextprotocol/server-google-maps",
    "@modelcontextprotocol/server-brave-search", "@modelcontextprotocol/server-postgres",
    "@modelcontextprotocol/server-redis", "@modelcontextprotocol/server-aws-kb-retrieval",
    "@modelcontextprotocol/server-everart", "@notionhq/notion-mcp-server",
    "@upstash/context7-mcp", "firecrawl-mcp", "tavily-mcp", "exa-mcp-server", "@playwright/mcp",
    "@modelcontextprotocol/server-gdrive", "@supabase/mcp-server-supabase", "@heroku/mcp-server",
    "@browserbasehq/mcp-server-browserbase", "@sentry/mcp-server", "@stripe/mcp", "@hubspot/mcp-server",
    "@executeautomation/playwright-mcp-server", "@wonderwhy-er/desktop-commander", "mongodb-mcp-server",
    "@elastic/mcp-server-elasticsearch", "@twilio-alpha/mcp", "figma-developer-mcp",
    "@apify/actors-mcp-server", "@brightdata/mcp", "mcp-server-kubernetes",
    "@benborla29/mcp-server-mysql", "@cloudflare/mcp-server-cloudflare", "@shopify/dev-mcp",
    "@azure-devops/mcp", "@circleci/mcp-server-circleci", "@contentful/mcp-server",
    "@neondatabase/mcp-server-neon", "@translated/lara-mcp", "@agentdeskai/browser-tools-mcp",
    "mcp-server-commands", "@kazuph/mcp-taskmanager", "@llmindset/mcp-hfspace", "@pinecone-database/mcp",
    "@railway/mcp-server", "@netlify/mcp", "@auth0/auth0-mcp-server", "@browserstack/mcp-server",
    "@perplexity-ai/mcp-server",
]
PYPI = [
    "mcp-server-git", "mcp-server-fetch", "mcp-server-time", "mcp-server-sqlite", "mcp-server-qdrant",
    "awslabs.aws-documentation-mcp-server", "mcp-atlassian", "arxiv-mcp-server", "duckduckgo-mcp-server",
    "markitdown-mcp", "chroma-mcp", "mcp-neo4j-cypher", "mcp-server-motherduck", "excel-mcp-server",
    "zotero-mcp", "mcp-obsidian", "awslabs.cdk-mcp-server", "awslabs.terraform-mcp-server",
    "mcp-server-calculator", "mcp-clickhouse", "mcp-server-docker", "mcp-pandoc",
    "mcp-server-tree-sitter", "mcp-text-editor", "mcp-shell-server", "mcp-alchemy", "blender-mcp",
    "mcp-youtube-search", "mcp-weather-server", "wikipedia-mcp", "mcp-server-sentry", "mcp-simple-arxiv",
    "mcp-server-notion", "mcp-server-jira", "mcp-grafana", "mcp-snowflake-server",
]

PLACEHOLDER = "placeholder-not-a-real-credential"

# The members of a tool the detector reads (outputSchema, annotations and _meta are not).
KEPT = ("name", "title", "description", "inputSchema")


def bin_path(work, name):
    """A server's executable: npm's bin folders under `work/npm*`, else the venv's."""
    for d in sorted(glob.glob(os.path.join(work, "npm*", "node_modules", ".bin"))):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return os.path.join(work, "venv", "bin", name)


def servers(work):
    nb = os.path.join(work, "npm", "node_modules", ".bin")
    vb = os.path.join(work, "venv", "bin")
    files = os.path.join(work, "files")
    os.makedirs(files, exist_ok=True)
    env = {
        "GITHUB_PERSONAL_ACCESS_TOKEN": PLACEHOLDER, "GITLAB_PERSONAL_ACCESS_TOKEN": PLACEHOLDER,
        "SLACK_BOT_TOKEN": PLACEHOLDER, "SLACK_TEAM_ID": "T0000", "GOOGLE_MAPS_API_KEY": PLACEHOLDER,
        "BRAVE_API_KEY": PLACEHOLDER, "EVERART_API_KEY": PLACEHOLDER, "FIRECRAWL_API_KEY": PLACEHOLDER,
        "TAVILY_API_KEY": PLACEHOLDER, "EXA_API_KEY": PLACEHOLDER, "AWS_ACCESS_KEY_ID": PLACEHOLDER,
        "AWS_SECRET_ACCESS_KEY": PLACEHOLDER, "AWS_REGION": "us-east-1",
        "NOTION_TOKEN": PLACEHOLDER, "HEROKU_API_KEY": PLACEHOLDER, "BROWSERBASE_API_KEY": PLACEHOLDER,
        "BROWSERBASE_PROJECT_ID": PLACEHOLDER, "PRIVATE_APP_ACCESS_TOKEN": PLACEHOLDER,
        "QDRANT_URL": "http://127.0.0.1:1", "COLLECTION_NAME": "none", "JIRA_URL": "https://example.atlassian.net",
        "JIRA_USERNAME": "nobody@example.com", "JIRA_API_TOKEN": PLACEHOLDER,
        "CONFLUENCE_URL": "https://example.atlassian.net/wiki", "CONFLUENCE_USERNAME": "nobody@example.com",
        "CONFLUENCE_API_TOKEN": PLACEHOLDER, "MDB_MCP_CONNECTION_STRING": "mongodb://127.0.0.1:1",
        "ES_URL": "http://127.0.0.1:1", "ES_API_KEY": PLACEHOLDER, "FIGMA_API_KEY": PLACEHOLDER,
        "APIFY_TOKEN": PLACEHOLDER, "API_TOKEN": PLACEHOLDER, "CIRCLECI_TOKEN": PLACEHOLDER,
        "CONTENTFUL_MANAGEMENT_ACCESS_TOKEN": PLACEHOLDER, "SPACE_ID": "none", "NEON_API_KEY": PLACEHOLDER,
        "LARA_ACCESS_KEY_ID": PLACEHOLDER, "LARA_ACCESS_KEY_SECRET": PLACEHOLDER,
        "MYSQL_HOST": "127.0.0.1", "MYSQL_PORT": "1", "MYSQL_USER": "none", "MYSQL_DB": "none",
        "OBSIDIAN_API_KEY": PLACEHOLDER, "ZOTERO_LOCAL": "true", "NEO4J_URI": "bolt://127.0.0.1:1",
        "CLICKHOUSE_HOST": "127.0.0.1", "CLICKHOUSE_USER": "none", "CLICKHOUSE_PASSWORD": PLACEHOLDER,
    }
    return [
        ("filesystem", [f"{nb}/mcp-server-filesystem", files], env),
        ("memory", [f"{nb}/mcp-server-memory"], env),
        ("everything", [f"{nb}/mcp-server-everything", "stdio"], env),
        ("sequential-thinking", [f"{nb}/mcp-server-sequential-thinking"], env),
        ("github", [f"{nb}/mcp-server-github"], env),
        ("gitlab", [f"{nb}/mcp-server-gitlab"], env),
        ("slack", [f"{nb}/mcp-server-slack"], env),
        ("google-maps", [f"{nb}/mcp-server-google-maps"], env),
        ("brave-search", [f"{nb}/mcp-server-brave-search"], env),
        ("postgres", [f"{nb}/mcp-server-postgres", "postgresql://127.0.0.1:1/none"], env),
        ("redis", [f"{nb}/mcp-server-redis", "redis://127.0.0.1:1"], env),
        ("aws-kb-retrieval", [f"{nb}/mcp-server-aws-kb-retrieval"], env),
        ("everart", [f"{nb}/mcp-server-everart"], env),
        ("notion", [f"{nb}/notion-mcp-server"], env),
        ("context7", [f"{nb}/context7-mcp"], env),
        ("firecrawl", [f"{nb}/firecrawl-mcp"], env),
        ("tavily", [f"{nb}/tavily-mcp"], env),
        ("exa", [f"{nb}/exa-mcp-server"], env),
        ("playwright", [f"{nb}/playwright-mcp"], env),
        ("git", [f"{vb}/mcp-server-git"], env),
        ("fetch", [f"{vb}/mcp-server-fetch"], env),
        ("time", [f"{vb}/mcp-server-time"], env),
        ("sqlite", [f"{vb}/mcp-server-sqlite", "--db-path", os.path.join(files, "db.sqlite")], env),
        ("gdrive", [bin_path(work, "mcp-server-gdrive")], env),
        ("supabase", [bin_path(work, "mcp-server-supabase"), "--access-token", PLACEHOLDER], env),
        ("heroku", [bin_path(work, "heroku-mcp-server")], env),
        ("browserbase", [bin_path(work, "mcp-server-browserbase")], env),
        ("sentry", [bin_path(work, "sentry-mcp"), "--access-token", PLACEHOLDER], env),
        ("stripe", [bin_path(work, "mcp"), "--tools=all", "--api-key=sk_test_placeholder"], env),
        ("hubspot", [bin_path(work, "mcp-hubspot")], env),
        ("playwright-ea", [bin_path(work, "playwright-mcp-server")], env),
        ("desktop-commander", [bin_path(work, "desktop-commander")], env),
        ("mongodb", [bin_path(work, "mongodb-mcp-server")], env),
        ("elasticsearch", [bin_path(work, "mcp-server-elasticsearch")], env),
        ("twilio", [bin_path(work, "twilio-mcp-server"), "ACxxx/placeholder:placeholder"], env),
        ("figma", [bin_path(work, "figma-developer-mcp"), "--stdio"], env),
        ("apify", [bin_path(work, "actors-mcp-server")], env),
        ("brightdata", [bin_path(work, "brightdata-mcp")], env),
        ("kubernetes", [bin_path(work, "mcp-server-kubernetes")], env),
        ("mysql", [bin_path(work, "mcp-server-mysql")], env),
        ("cloudflare", [bin_path(work, "mcp-server-cloudflare"), "run", "placeholder"], env),
        ("shopify", [bin_path(work, "shopify-dev-mcp")], env),
        ("azure-devops", [bin_path(work, "mcp-server-azuredevops"), "placeholder-org"], env),
        ("circleci", [bin_path(work, "mcp-server-circleci")], env),
        ("contentful", [bin_path(work, "mcp-server-contentful")], env),
        ("neon", [bin_path(work, "mcp-server-neon"), "start", PLACEHOLDER], env),
        ("lara", [bin_path(work, "lara-mcp")], env),
        ("browser-tools", [bin_path(work, "browser-tools-mcp")], env),
        ("qdrant", [bin_path(work, "mcp-server-qdrant")], env),
        ("aws-documentation", [bin_path(work, "awslabs.aws-documentation-mcp-server")], env),
        ("atlassian", [bin_path(work, "mcp-atlassian")], env),
        ("arxiv", [bin_path(work, "arxiv-mcp-server")], env),
        ("duckduckgo", [bin_path(work, "duckduckgo-mcp-server")], env),
        ("markitdown", [bin_path(work, "markitdown-mcp")], env),
        ("chroma", [bin_path(work, "chroma-mcp")], env),
        ("neo4j-cypher", [bin_path(work, "mcp-neo4j-cypher")], env),
        ("motherduck", [bin_path(work, "mcp-server-motherduck")], env),
        ("excel", [bin_path(work, "excel-mcp-server"), "stdio"], env),
        ("zotero", [bin_path(work, "zotero-mcp")], env),
        ("obsidian", [bin_path(work, "mcp-obsidian")], env),
        ("aws-cdk", [bin_path(work, "awslabs.cdk-mcp-server")], env),
        ("aws-terraform", [bin_path(work, "awslabs.terraform-mcp-server")], env),
        ("calculator", [bin_path(work, "mcp-server-calculator")], env),
        ("clickhouse", [bin_path(work, "mcp-clickhouse")], env),
        ("docker", [bin_path(work, "mcp-server-docker")], env),
        ("commands", [bin_path(work, "mcp-server-commands")], env),
        ("taskmanager", [bin_path(work, "mcp-taskmanager")], env),
        ("hfspace", [bin_path(work, "mcp-hfspace")], env),
        ("pinecone", [bin_path(work, "pinecone-mcp")], env),
        ("railway", [bin_path(work, "railway-mcp-server")], env),
        ("netlify", [bin_path(work, "netlify-mcp")], env),
        ("auth0", [bin_path(work, "auth0-mcp"), "run"], env),
        ("browserstack", [bin_path(work, "browserstack-mcp-server")], env),
        ("perplexity", [bin_path(work, "perplexity-mcp")], env),
        ("pandoc", [bin_path(work, "mcp-pandoc")], env),
        ("tree-sitter", [bin_path(work, "mcp-server-tree-sitter")], env),
        ("text-editor", [bin_path(work, "mcp-text-editor")], env),
        ("shell", [bin_path(work, "mcp-shell-server")], {**env, "ALLOW_COMMANDS": "ls,cat"}),
        ("alchemy", [bin_path(work, "mcp-alchemy")], {**env, "DB_URL": "sqlite:///" + os.path.join(files, "a.db")}),
        ("blender", [bin_path(work, "blender-mcp")], env),
        ("youtube-search", [bin_path(work, "mcp-youtube-search")], env),
        ("weather", [bin_path(work, "mcp_weather_server")], env),
        ("wikipedia", [bin_path(work, "wikipedia-mcp")], env),
        ("sentry-py", [bin_path(work, "mcp-server-sentry"), "--auth-token", PLACEHOLDER], env),
        ("simple-arxiv", [bin_path(work, "mcp-simple-arxiv")], env),
        ("notion-py", [bin_path(work, "mcp-server-notion")], env),
        ("jira", [bin_path(work, "mcp-server-jira")], env),
        ("grafana", [bin_path(work, "mcp-grafana")], {**env, "GRAFANA_URL": "http://127.0.0.1:1"}),
        ("snowflake", [bin_path(work, "mcp_snowflake_server")], env),
    ]


def install(work):
    npm = os.path.join(work, "npm")
    os.makedirs(npm, exist_ok=True)
    if not os.path.exists(os.path.join(npm, "package.json")):
        subprocess.run(["npm", "init", "-y"], cwd=npm, check=True, stdout=subprocess.DEVNULL)
    # One package at a time: one that fails to install (a browser download, say) must
    # not stop the rest; its server is then reported as not installed.
    for package in NPM:
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", package], cwd=npm)
    venv = os.path.join(work, "venv")
    if not os.path.exists(venv):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    for package in PYPI:
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", package])


def rpc_lines(proc, deadline):
    """Yields JSON-RPC messages the server writes, until the deadline."""
    buf = b""
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if not ready:
            if proc.poll() is not None:
                return
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    pass


def list_tools(name, argv, env, work, timeout=45):
    # Its own process group, so servers that start helpers leave none behind.
    with open(os.path.join(work, f"{name}.stderr"), "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, env={**os.environ, **env}, start_new_session=True)

    def send(msg):
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        proc.stdin.flush()

    tools = []
    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "toolgate-real-definitions", "version": "1"}}})
        deadline = time.time() + timeout
        cursor, next_id = None, 2
        for msg in rpc_lines(proc, deadline):
            if "method" in msg:
                # A request or notification from the server (ping, roots/list): not ours.
                continue
            if msg.get("id") == 1:
                send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                send({"jsonrpc": "2.0", "id": next_id, "method": "tools/list", "params": {}})
            elif msg.get("id") == next_id and "result" in msg:
                tools.extend(msg["result"].get("tools", []))
                cursor = msg["result"].get("nextCursor")
                if not cursor:
                    break
                next_id += 1
                send({"jsonrpc": "2.0", "id": next_id, "method": "tools/list",
                      "params": {"cursor": cursor}})
            elif msg.get("id") == next_id and "error" in msg:
                print(f"{name}: tools/list error {msg['error']}", file=sys.stderr)
                break
    except (BrokenPipeError, OSError) as e:
        print(f"{name}: {e}", file=sys.stderr)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    return tools


def collect(work, out):
    with open(out, "w", encoding="utf-8") as f:
        for i, (name, argv, env) in enumerate(servers(work)):
            if not os.path.exists(argv[0]):
                print(f"{name}: {argv[0]} is not installed", file=sys.stderr)
                continue
            tools = list_tools(name, argv, env, work)
            print(f"{name}: {len(tools)} tools", file=sys.stderr)
            if not tools:
                continue
            f.write(json.dumps({
                "schema": "toolgate.event.v1", "event_id": f"real-{i:03}",
                "time": f"2026-01-01T{i // 60:02}:{i % 60:02}:00Z", "agent_id": f"agent-{name}",
                "session_id": f"session-{name}", "kind": "tool_list", "server": name,
                "tools": [{k: t[k] for k in KEPT if k in t} for t in tools]},
                ensure_ascii=False) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/toolgate-real-definitions")
    p.add_argument("--definitions", help="a previous run's tool_list events; skips install and listing")
    p.add_argument("--bin", default=BIN)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    events = a.definitions
    if not events:
        install(a.work)
        events = os.path.join(a.work, "definitions.jsonl")
        collect(a.work, events)
    findings = os.path.join(a.work, "findings.jsonl")
    subprocess.run([a.bin, "analyze", "--input", events, "--output", findings,
                    "--dead-letter", os.path.join(a.work, "dead-letter.jsonl")], check=True)
    tools = {}
    with open(events, encoding="utf-8") as f:
        for line in f:
            e = json.loads(line)
            for t in e["tools"]:
                tools[(e["server"], t["name"])] = None
    flagged = {}
    with open(findings, encoding="utf-8") as f:
        for line in f:
            x = json.loads(line)
            if x["rule_id"] != "poisoned_description":
                continue
            key = (x["server"], x["tool"])
            order = ["info", "low", "medium", "high", "critical"]
            if key not in flagged or order.index(x["severity"]) > order.index(flagged[key]["severity"]):
                flagged[key] = x
    n = len(tools)
    servers_seen = len({s for s, _ in tools})
    print(f"\n{n} tools from {servers_seen} servers\n")
    print("| severity reached | tools | share |")
    print("| --- | ---: | ---: |")
    for level, at_least in [("low+", ["low", "medium", "high", "critical"]),
                            ("medium+", ["medium", "high", "critical"]),
                            ("high+", ["high", "critical"])]:
        k = sum(1 for x in flagged.values() if x["severity"] in at_least)
        print(f"| {level} | {k} | {100 * k / max(n, 1):.1f}% |")
    print()
    for (server, tool), x in sorted(flagged.items(), key=lambda kv: kv[0]):
        ev = x["evidence"]
        print(f"- {x['severity']}: {server}/{tool} `{ev.get('field')}` score {ev.get('score')} "
              f"signals {[s.get('signal', s) if isinstance(s, dict) else s for s in ev.get('signals', [])]}: "
              f"{(ev.get('fragment') or '')[:160]!r}")
    by_server = collections.Counter(s for s, _ in tools)
    print("\ntools per server:", dict(sorted(by_server.items())))


if __name__ == "__main__":
    main()
