//! `toolgate sql` (one query, or an interactive shell) and `toolgate serve-sql`.

use std::io::Write;

use anyhow::{Context, Result};
use datafusion::prelude::SessionContext;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use toolgate_analytics::pgwire::{Access, Limits, LoginLimits, serve as serve_pgwire};
use toolgate_analytics::sql::format::{OutputFormat, render};
use toolgate_analytics::sql::{self, SqlError};
use toolgate_protocol::config::HistoryConfig;

use super::Output;
use super::history::history_config;
use crate::cli::{HistoryArgs, ServeSqlArgs, SqlArgs};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the query runtime")
}

async fn open(args: &HistoryArgs) -> Result<SessionContext> {
    let config = history_config(args)?;
    sql::open(&config)
        .await
        .with_context(|| format!("opening history {}", config.location))
}

/// Runs the query and prints it, or starts the shell.
pub fn run(args: &SqlArgs) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let ctx = open(&args.history).await?;
        match &args.query {
            Some(q) => {
                let target = args.output.as_deref().unwrap_or("-");
                if args.format == OutputFormat::Parquet && target == "-" {
                    anyhow::bail!("--format parquet needs --output FILE");
                }
                let mut out = Output::open(target)?;
                execute(&ctx, q, args.format, &mut out).await?;
                out.finish().with_context(|| format!("writing {target}"))
            }
            None => shell(&ctx, args.format).await,
        }
    })
}

/// Prints each titled query's result as a table (the demo's summary).
pub fn print_queries(history: &HistoryConfig, queries: &[(&str, &str)]) -> Result<()> {
    runtime()?.block_on(async {
        let ctx = sql::open(history)
            .await
            .with_context(|| format!("opening history {}", history.location))?;
        let mut out = Output::open("-")?;
        for (title, query) in queries {
            writeln!(out, "\n{title}:").context("writing the result")?;
            execute(&ctx, query, OutputFormat::Table, &mut out).await?;
        }
        out.finish().context("writing the result")
    })
}

async fn execute(
    ctx: &SessionContext,
    query: &str,
    format: OutputFormat,
    out: &mut Output,
) -> Result<()> {
    let (schema, batches) = sql::query(ctx, query).await.map_err(explain)?;
    render(&schema, &batches, format, out).context("writing the result")
}

fn explain(e: SqlError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// The interactive shell: statements end with `;`, history is kept in
/// `~/.toolgate_sql_history`, Tab completes table, view, column and function names.
async fn shell(ctx: &SessionContext, mut format: OutputFormat) -> Result<()> {
    let names = completion_names(ctx).await;
    let mut editor: Editor<SqlHelper, rustyline::history::DefaultHistory> =
        Editor::new().context("starting the line editor")?;
    editor.set_helper(Some(SqlHelper { names }));
    let history_file =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".toolgate_sql_history"));
    if let Some(f) = &history_file {
        let _ = editor.load_history(f);
    }
    eprintln!(
        "toolgate sql: tables {}; views {}.\n\\d lists them, \\d NAME shows columns, \\format table|csv|json, \\q quits.",
        toolgate_analytics::schema::Table::ALL
            .map(|t| t.name())
            .join(", "),
        sql::VIEWS.map(|(n, _)| n).join(", ")
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "toolgate> "
        } else {
            "      ..> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading input"),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let mut parts = trimmed.split_whitespace();
            let statement = match (parts.next(), parts.next()) {
                (Some("\\q"), _) => break,
                (Some("\\d"), None) => "SHOW TABLES".to_string(),
                (Some("\\d"), Some(name)) => format!("SHOW COLUMNS FROM {name}"),
                (Some("\\format"), Some(f)) => {
                    match f.parse::<OutputFormat>() {
                        Ok(OutputFormat::Parquet) => eprintln!(
                            "parquet needs a file: use `toolgate sql --format parquet --output FILE`"
                        ),
                        Ok(f) => format = f,
                        Err(e) => eprintln!("{e}"),
                    }
                    continue;
                }
                _ => {
                    eprintln!("unknown command {trimmed:?}");
                    continue;
                }
            };
            run_in_shell(ctx, &statement, format).await;
            continue;
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        if trimmed.ends_with(';') {
            let statement = std::mem::take(&mut buffer);
            let _ = editor.add_history_entry(statement.as_str());
            run_in_shell(ctx, &statement, format).await;
        }
    }
    if let Some(f) = &history_file {
        let _ = editor.save_history(f);
    }
    Ok(())
}

async fn run_in_shell(ctx: &SessionContext, statement: &str, format: OutputFormat) {
    let started = std::time::Instant::now();
    let mut out = Output::Stdout(std::io::BufWriter::new(std::io::stdout()));
    match execute(ctx, statement, format, &mut out).await {
        Ok(()) => {
            let _ = out.flush();
            eprintln!("{:.3} s", started.elapsed().as_secs_f64());
        }
        Err(e) => eprintln!("error: {e:#}"),
    }
}

async fn completion_names(ctx: &SessionContext) -> Vec<String> {
    let mut names: Vec<String> = SQL_WORDS.iter().map(|s| s.to_string()).collect();
    let q = "SELECT DISTINCT table_name AS n FROM information_schema.columns WHERE table_schema = 'public' \
             UNION SELECT DISTINCT column_name FROM information_schema.columns WHERE table_schema = 'public' \
             UNION SELECT DISTINCT routine_name FROM information_schema.routines";
    if let Ok((_, batches)) = sql::query(ctx, q).await {
        for b in batches {
            if let Some(col) = b
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
            {
                names.extend(col.iter().flatten().map(str::to_string));
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

const SQL_WORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "AND",
    "OR",
    "NOT",
    "COUNT",
    "DISTINCT",
    "HAVING",
    "AS",
    "DESC",
    "ASC",
    "BETWEEN",
    "INTERVAL",
    "NOW()",
    "EXPLAIN",
    "SHOW TABLES",
    "SHOW COLUMNS FROM",
    "WITH",
];

struct SqlHelper {
    names: Vec<String>,
}

impl Completer for SqlHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let lower = word.to_lowercase();
        let pairs = self
            .names
            .iter()
            .filter(|n| n.to_lowercase().starts_with(&lower))
            .map(|n| Pair {
                display: n.clone(),
                replacement: n.clone(),
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for SqlHelper {
    type Hint = String;
}
impl Highlighter for SqlHelper {}
impl Validator for SqlHelper {}
impl Helper for SqlHelper {}

/// Serves the history until interrupted.
pub fn serve(args: &ServeSqlArgs) -> Result<()> {
    let password = match &args.password_env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(p) if !p.is_empty() => Some(p),
            _ => anyhow::bail!(
                "--password-env names {var}, but that environment variable is not set"
            ),
        },
    };
    let rt = runtime()?;
    rt.block_on(async {
        let ctx = open(&args.history).await?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("listening address")?;
        println!("toolgate serve-sql listening on {addr}");
        eprintln!(
            "connect with: psql -h {} -p {} -U {}{}",
            addr.ip(),
            addr.port(),
            args.user,
            if password.is_none() {
                " (no password set: any user name works)"
            } else {
                ""
            }
        );
        std::io::stdout().flush().ok();
        let access = Access {
            user: args.user.clone(),
            password,
        };
        tokio::select! {
            r = serve_pgwire(ctx, listener, access, limits(args)) => r.context("serving SQL"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

/// The server's memory and login limits from the command line.
fn limits(args: &ServeSqlArgs) -> Limits {
    Limits {
        memory: args.memory_limit,
        query_memory: args
            .query_memory_limit
            .unwrap_or(args.memory_limit / 4)
            .min(args.memory_limit),
        login: LoginLimits {
            max_failures: args.login_max_failures,
            lockout: args.login_lockout,
            failure_delay: args.login_failure_delay,
            max_failures_per_second: args.login_max_failures_per_second,
            ..LoginLimits::default()
        },
    }
}
