//! The Parquet history end to end: `toolgate analyze --history` over the shared AgentDojo
//! runs, read back by `toolgate sql`, by psql through `toolgate serve-sql`, by two other
//! engines (pyarrow and DuckDB), and written to and read from S3 (moto's server).

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use common::{agentdojo_replay, python_venv, repo, stderr, toolgate};
use serde_json::Value;

/// One history of the AgentDojo runs for every test here, with the counts the events
/// file and the findings file hold.
struct Fixture {
    dir: PathBuf,
    history: String,
    rows: BTreeMap<String, u64>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let replay = agentdojo_replay();
        let dir = replay.dir.clone();
        assert!(
            replay.analyze_summary.contains("history: "),
            "{}",
            replay.analyze_summary
        );
        let mut rows: BTreeMap<String, u64> =
            ["tool_calls", "tool_results", "tool_lists", "user_messages"]
                .into_iter()
                .map(|t| (t.to_string(), 0))
                .collect();
        let events = flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join("events.jsonl.gz")).expect("events"),
        );
        for line in std::io::BufRead::lines(std::io::BufReader::new(events)) {
            let v: Value = serde_json::from_str(&line.expect("a line")).expect("event json");
            let table = match v["kind"].as_str() {
                Some("tool_call") => "tool_calls",
                Some("tool_result") => "tool_results",
                Some("tool_list") => "tool_lists",
                Some("user_message") => "user_messages",
                other => panic!("kind {other:?}"),
            };
            *rows.entry(table.to_string()).or_default() += 1;
        }
        let findings = std::fs::read_to_string(dir.join("findings.jsonl")).expect("findings");
        rows.insert("findings".into(), findings.lines().count() as u64);
        rows.insert("decisions".into(), 0);
        Fixture {
            history: dir.join("hist").display().to_string(),
            dir,
            rows,
        }
    })
}

const COUNTS: &str = "SELECT 'decisions' AS t, count(*) AS n FROM decisions \
    UNION ALL SELECT 'findings', count(*) FROM findings \
    UNION ALL SELECT 'tool_calls', count(*) FROM tool_calls \
    UNION ALL SELECT 'tool_lists', count(*) FROM tool_lists \
    UNION ALL SELECT 'tool_results', count(*) FROM tool_results \
    UNION ALL SELECT 'user_messages', count(*) FROM user_messages";

fn counts_csv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter(|l| !l.is_empty() && *l != "t,n")
        .map(|l| {
            let (t, n) = l.split_once(',').expect("t,n");
            (t.to_string(), n.trim().parse().expect("count"))
        })
        .collect()
}

fn sql(history: &str, args: &[&str]) -> String {
    let mut all = vec!["sql", "--history", history];
    all.extend_from_slice(args);
    let out = toolgate(&all, &fixture().dir);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_history_holds_every_event_and_finding_of_the_replay() {
    let f = fixture();
    assert!(f.rows["tool_calls"] > 1_000, "{:?}", f.rows);
    let ours = counts_csv(&sql(&f.history, &["--format", "csv", COUNTS]));
    assert_eq!(ours, f.rows);
    // Every id once.
    let out = sql(
        &f.history,
        &[
            "--format",
            "csv",
            "SELECT count(DISTINCT event_id) AS n FROM tool_calls",
        ],
    );
    assert_eq!(
        out.lines().nth(1),
        Some(f.rows["tool_calls"].to_string().as_str())
    );
}

#[test]
fn sql_prints_tables_json_lines_and_parquet_files() {
    let f = fixture();
    let q = "SELECT tool, count(*) AS calls FROM tool_calls GROUP BY tool ORDER BY calls DESC, tool LIMIT 3";
    let table = sql(&f.history, &[q]);
    assert!(
        table.contains("| tool") && table.ends_with("(3 rows)\n"),
        "{table}"
    );
    let json = sql(&f.history, &["--format", "json", q]);
    let rows: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0]["calls"].as_u64() >= rows[1]["calls"].as_u64());
    let out = toolgate(
        &["sql", "--history", &f.history, "--format", "parquet", q],
        &f.dir,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--format parquet needs --output FILE"));
    sql(
        &f.history,
        &["--format", "parquet", "--output", "top.parquet", q],
    );
    let bytes = std::fs::read(f.dir.join("top.parquet")).expect("parquet written");
    assert_eq!(&bytes[..4], b"PAR1");
    // The views answer over real data.
    let sessions = sql(
        &f.history,
        &["--format", "csv", "SELECT count(*) AS n FROM sessions"],
    );
    assert!(
        sessions
            .lines()
            .nth(1)
            .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 100)),
        "{sessions}"
    );
    let flows = sql(
        &f.history,
        &[
            "--format",
            "csv",
            "SELECT count(*) AS n FROM flows WHERE source_server IS NOT NULL",
        ],
    );
    let provenance = sql(
        &f.history,
        &[
            "--format",
            "csv",
            "SELECT count(*) FROM findings WHERE rule_id = 'cross_domain_flow'",
        ],
    );
    assert_eq!(flows.lines().nth(1), provenance.lines().nth(1));
    // Errors name the problem.
    let out = toolgate(
        &[
            "sql",
            "--history",
            &f.history,
            "SELECT nope FROM tool_calls",
        ],
        &f.dir,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = toolgate(
        &["sql", "--history", &f.history, "DELETE FROM findings"],
        &f.dir,
    );
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
}

/// pyarrow's dataset reader and DuckDB read the same files, hive partitions included,
/// and count exactly what DataFusion counts.
#[test]
fn pyarrow_and_duckdb_read_the_same_files_with_identical_counts() {
    let f = fixture();
    let python = python_venv("test-venv-history", "requirements-history.txt");
    let out = Command::new(&python)
        .arg(repo().join("tests/python/read_history.py"))
        .arg(&f.history)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_slice(&out.stdout).expect("json");
    for (table, n) in &f.rows {
        let t = &theirs[table];
        assert_eq!(
            (t["pyarrow"], t["duckdb"], t["pyarrow_ids"], t["duckdb_ids"]),
            (*n, *n, *n, *n),
            "{table}: {t:?}"
        );
    }
}

/// Issue 22: SQLAlchemy (and so Superset and other BI tools) refused to connect,
/// since `version()` answered "Apache DataFusion ..." where it parses PostgreSQL's, and
/// psycopg's `SAVEPOINT` was refused as a write.
#[test]
fn issue_22_sqlalchemy_connects_and_queries() {
    let f = fixture();
    let python = python_venv("test-venv-history", "requirements-history.txt");
    let server = serve_sql(&f.history, Some("s3cret-pw"));
    for driver in ["psycopg", "pg8000"] {
        let out = Command::new(&python)
            .arg(repo().join("tests/python/sqlalchemy_query.py"))
            .args([
                driver,
                &server.port.to_string(),
                "toolgate",
                "s3cret-pw",
                "SELECT count(*) FROM findings",
            ])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{driver}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(
            got["server_version_info"],
            serde_json::json!([16, 6]),
            "{driver}"
        );
        assert_eq!(got["value"].as_u64(), Some(f.rows["findings"]), "{driver}");
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_sql(history: &str, password: Option<&str>) -> Server {
    serve_sql_with(history, password, &[])
}

fn serve_sql_with(history: &str, password: Option<&str>, extra: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toolgate"));
    cmd.args(["serve-sql", "--listen", "127.0.0.1:0", "--history", history])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = password {
        cmd.args(["--password-env", "TEST_SQL_PASSWORD"])
            .env("TEST_SQL_PASSWORD", p);
    }
    let mut child = cmd.spawn().expect("serve-sql");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address line");
    let Some(port) = line
        .trim()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
    else {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        panic!("serve-sql printed {line:?}; stderr: {err}");
    };
    Server { child, port }
}

fn ensure_psql() {
    let status = Command::new("bash")
        .arg(repo().join("tests/tools/ensure-psql.sh"))
        .status()
        .expect("bash");
    assert!(
        status.success(),
        "psql is missing and could not be installed"
    );
}

fn psql(port: u16, user: &str, password: Option<&str>, sql: &str) -> std::process::Output {
    psql_command(port, user, password, sql)
        .output()
        .expect("psql runs")
}

fn psql_command(port: u16, user: &str, password: Option<&str>, sql: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        user,
        "-d",
        "toolgate",
    ])
    .args([
        "-X",
        "-A",
        "-t",
        "-F",
        ",",
        "-v",
        "ON_ERROR_STOP=1",
        "-v",
        "VERBOSITY=verbose",
    ])
    .args(["-c", sql])
    .env_remove("PGPASSWORD");
    match password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.arg("-w"),
    };
    cmd
}

/// The real PostgreSQL client against `serve-sql`: the right rows, writes refused with
/// SQLSTATE 25006, a wrong password refused, catalog introspection working.
#[test]
fn psql_reads_the_history_and_cannot_change_it() {
    ensure_psql();
    let f = fixture();
    let server = serve_sql(&f.history, Some("s3cret-pw"));
    let ok = |sql: &str| {
        let out = psql(server.port, "toolgate", Some("s3cret-pw"), sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let theirs: BTreeMap<String, u64> = ok(COUNTS)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (t, n) = l.split_once(',').expect("t,n");
            (t.to_string(), n.parse().expect("count"))
        })
        .collect();
    assert_eq!(theirs, f.rows);
    // The same top tools, in the same order, as `toolgate sql`.
    let q = "SELECT tool, count(*) AS calls FROM tool_calls GROUP BY tool ORDER BY calls DESC, tool LIMIT 5";
    let via_cli: Vec<String> = sql(&f.history, &["--format", "csv", q])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    let via_psql: Vec<String> = ok(q)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(via_psql, via_cli);
    // Timestamps and JSON functions come through as PostgreSQL text.
    let one = ok(
        "SELECT time, json_get_str(arguments, 'recipient') FROM tool_calls WHERE tool = 'send_money' ORDER BY time LIMIT 1",
    );
    assert!(one.starts_with("20"), "{one}");
    // Clients introspect the catalog.
    let tables = ok(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    for t in [
        "decisions",
        "findings",
        "tool_calls",
        "sessions",
        "flows",
        "agents",
        "call_outcomes",
    ] {
        assert!(tables.lines().any(|l| l == t), "{t} missing from {tables}");
    }
    for write in [
        "INSERT INTO findings (finding_id) VALUES ('x')",
        "DROP TABLE tool_calls",
        "CREATE TABLE stolen AS SELECT * FROM tool_calls",
        "COPY tool_calls TO '/tmp/toolgate-copy.csv'",
    ] {
        let out = psql(server.port, "toolgate", Some("s3cret-pw"), write);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{write} was accepted");
        assert!(
            err.contains("25006") && err.contains("read-only"),
            "{write}: {err}"
        );
    }
    let out = psql(server.port, "toolgate", Some("wrong"), "SELECT 1");
    assert!(!out.status.success());
    let out = psql(server.port, "intruder", Some("s3cret-pw"), "SELECT 1");
    assert!(!out.status.success());
    // The server is still up after refusals.
    assert_eq!(ok("SELECT 1").trim(), "1");
}

/// Issue 19: a query whose memory need is over the per-query limit fails with
/// DataFusion's resources error (SQLSTATE 53200), and the server answers the next one.
#[test]
fn issue_19_a_query_over_the_memory_limit_fails_and_the_server_answers_the_next() {
    ensure_psql();
    let f = fixture();
    let server = serve_sql_with(
        &f.history,
        None,
        &["--memory-limit", "64MiB", "--query-memory-limit", "16MiB"],
    );
    // A hash join's build side cannot spill: 20 million rows need far over 16 MiB.
    let out = psql(
        server.port,
        "toolgate",
        None,
        "SELECT count(*) FROM range(20000000) a JOIN range(20000000) b ON a.value = b.value",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the join ran within 16 MiB");
    assert!(
        err.contains("Resources exhausted") && err.contains("53200"),
        "{err}"
    );
    let ok = |sql: &str| {
        let out = psql(server.port, "toolgate", None, sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    assert_eq!(ok("SELECT 1").trim(), "1");
    // A join that fits still runs, and so do queries over the history.
    assert_eq!(
        ok("SELECT count(*) FROM range(1000) a JOIN range(1000) b ON a.value = b.value").trim(),
        "1000"
    );
    assert_eq!(counts_csv(&ok(COUNTS)), f.rows);
    // A client cannot lift its own limit.
    let out = psql(
        server.port,
        "toolgate",
        None,
        "SET datafusion.runtime.memory_limit = '100G'",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("42501"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The error line psql prints for a refused login, with the user name it was sent
/// replaced, so that two refusals can be compared.
fn login_error(out: &std::process::Output, user: &str) -> String {
    assert!(!out.status.success(), "the login was accepted");
    String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace(&format!("\"{user}\""), "\"USER\"")
}

/// Issue 19: an unknown user name and a wrong password cannot be told apart by the
/// message: both are PostgreSQL's `password authentication failed for user "…"`, with
/// the name the client sent.
#[test]
fn issue_19_wrong_user_and_wrong_password_fail_with_the_same_message() {
    ensure_psql();
    let f = fixture();
    let server = serve_sql(&f.history, Some("s3cret-pw"));
    let wrong_user = psql(server.port, "intruder", Some("s3cret-pw"), "SELECT 1");
    let wrong_password = psql(server.port, "toolgate", Some("wrong"), "SELECT 1");
    let wrong_user = login_error(&wrong_user, "intruder");
    let wrong_password = login_error(&wrong_password, "toolgate");
    assert!(
        wrong_password.contains("password authentication failed for user \"USER\""),
        "{wrong_password}"
    );
    assert_eq!(wrong_user, wrong_password);
    // Two failures are below the default limit: the right password still gets in.
    let out = psql(server.port, "toolgate", Some("s3cret-pw"), "SELECT 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 19: after `--login-max-failures` failed logins from one address, the next
/// attempt from it is refused before its password is looked at, even the right one.
#[test]
fn issue_19_repeated_failed_logins_from_one_address_are_refused() {
    ensure_psql();
    let f = fixture();
    let server = serve_sql_with(
        &f.history,
        Some("s3cret-pw"),
        &[
            "--login-max-failures",
            "3",
            "--login-lockout",
            "10m",
            "--login-failure-delay",
            "200ms",
        ],
    );
    let started = std::time::Instant::now();
    for guess in ["guess-1", "guess-2", "guess-3"] {
        let out = psql(server.port, "toolgate", Some(guess), "SELECT 1");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{guess} was accepted");
        assert!(err.contains("password authentication failed"), "{err}");
    }
    // Each failure waited for the delay before its answer.
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
    let out = psql(server.port, "toolgate", Some("s3cret-pw"), "SELECT 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a locked-out address logged in");
    assert!(
        err.contains("too many failed login attempts from this address"),
        "{err}"
    );
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name, which is in parentheses and may hold spaces:
    // state is the first, utime and stime the 12th and 13th.
    let (_, rest) = stat.rsplit_once(')').expect("comm");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Issue 19: a query whose client disconnects stops: the server's CPU use drops to
/// idle once the client is gone, and the server still answers.
#[test]
fn issue_19_a_query_stops_when_its_client_disconnects() {
    ensure_psql();
    let f = fixture();
    let server = serve_sql(&f.history, Some("s3cret-pw"));
    // Four trillion pairs: days of work, and no row is sent before the end. DataFusion
    // stops a dropped query where its tasks next yield (every 128 input batches), so
    // the buffered side is kept small to make that quick.
    let mut client = psql_command(
        server.port,
        "toolgate",
        Some("s3cret-pw"),
        "SELECT count(*) FROM range(4) a CROSS JOIN range(1000000000000) b \
         WHERE a.value + b.value < 0",
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("psql");
    // CPU ticks the server spends over a short window.
    let window = std::time::Duration::from_millis(500);
    let ticks = || {
        let before = cpu_ticks(server.child.id());
        std::thread::sleep(window);
        cpu_ticks(server.child.id()) - before
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Wait until the query keeps the server busy.
    let mut busy = ticks();
    while busy < 10 && std::time::Instant::now() < deadline {
        busy = ticks();
    }
    assert!(
        busy >= 10,
        "the query did not run ({busy} ticks in {window:?})"
    );
    assert!(
        client.try_wait().expect("psql").is_none(),
        "the query ended by itself"
    );
    client.kill().expect("kill psql");
    client.wait().expect("psql exits");
    // The close is noticed and the query's tasks stop at their next yield: wait until
    // the server goes quiet, or fail at the deadline.
    let mut after = ticks();
    while after * 5 >= busy && std::time::Instant::now() < deadline {
        after = ticks();
    }
    assert!(
        after * 5 < busy,
        "the server kept working after its client left: {after} ticks in {window:?}, {busy} while the client was there"
    );
    let out = psql(server.port, "toolgate", Some("s3cret-pw"), "SELECT 1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The history on S3 (moto's S3 server on loopback): written by analyze, compacted,
/// and read by `toolgate sql` with the counts of a local copy.
#[test]
fn the_history_can_live_in_s3() {
    let f = fixture();
    let python = python_venv("test-venv-history", "requirements-history.txt");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto(
        Command::new(python.with_file_name("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let make_bucket = Command::new(&python)
        .args(["-c", "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket='toolgate-history')"])
        .arg(&endpoint)
        .output()
        .expect("boto3");
    assert!(
        make_bucket.status.success(),
        "{}",
        String::from_utf8_lossy(&make_bucket.stderr)
    );
    let config = f.dir.join("s3.toml");
    std::fs::write(
        &config,
        format!("[history]\ncompact_min_files = 2\n[history.s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\nallow_http = true\n"),
    )
    .expect("config");
    let config = config.display().to_string();
    let location = "s3://toolgate-history/fleet";
    let s3 = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(args)
            .current_dir(&f.dir)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .expect("toolgate");
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    // The shipped sample, written twice so every hour has two small files to compact,
    // and once locally for the expected counts.
    let sample = repo()
        .join("examples/agentdojo-sample.jsonl")
        .display()
        .to_string();
    for _ in 0..2 {
        s3(&[
            "analyze",
            "--config",
            &config,
            "--input",
            &sample,
            "--output",
            "/dev/null",
            "--history",
            location,
        ]);
    }
    s3(&[
        "analyze",
        "--input",
        &sample,
        "--output",
        "/dev/null",
        "--history",
        "sample-hist",
    ]);
    let local = counts_csv(&sql("sample-hist", &["--format", "csv", COUNTS]));
    assert!(local["tool_calls"] > 10, "{local:?}");
    let doubled: BTreeMap<String, u64> = local.iter().map(|(t, n)| (t.clone(), 2 * n)).collect();
    let counts = |s3: &dyn Fn(&[&str]) -> String| {
        counts_csv(&s3(&[
            "sql",
            "--config",
            &config,
            "--history",
            location,
            "--format",
            "csv",
            COUNTS,
        ]))
    };
    assert_eq!(counts(&s3), doubled);
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args([
            "history",
            "compact",
            "--config",
            &config,
            "--history",
            location,
            "--min-age",
            "0s",
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .expect("compact");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("compacted "), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("compacted 0 hour"),
        "{}",
        stderr(&out)
    );
    assert_eq!(counts(&s3), doubled);
    drop(moto);
}

/// The shell without a terminal (as a script or a pipe drives it): statements end at
/// `;` across lines, `\d` lists tables, `\format` switches the output, `\q` quits.
#[test]
fn the_interactive_shell_runs_statements_and_meta_commands() {
    use std::io::Write;
    let f = fixture();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["sql", "--history", &f.history])
        .env("HOME", &f.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("toolgate sql");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(
            b"\\format csv\nSELECT count(*) AS n\n  FROM tool_calls;\n\\d\nSELECT nope;\n\\q\n",
        )
        .expect("write");
    let out = child.wait_with_output().expect("shell exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout.contains(&format!("n\n{}\n", f.rows["tool_calls"])),
        "{stdout}"
    );
    assert!(
        stdout.contains("tool_calls") && stdout.contains("sessions"),
        "{stdout}"
    );
    assert!(
        stderr(&out).contains("error:"),
        "a bad statement is reported, not fatal"
    );
}
