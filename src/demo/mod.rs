//! `toolgate demo`: the embedded broker, the engine, and a simulated fleet publishing
//! through the real sink library, for a minute or less; findings and blocks are printed
//! as they happen, then a short SQL summary over the history the run wrote.

pub mod fleet;

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use toolgate_protocol::config::Config;
use toolgate_protocol::decision::DecisionAction;

use toolgate_engine::decisions::load_or_create_signer;
use toolgate_engine::embedded::EmbeddedBroker;
use toolgate_engine::writers::Row;
use toolgate_engine::{Counters, EngineOptions, data_path};

/// The demo's configuration (`examples/demo.toml`), built in.
pub const CONFIG: &str = include_str!("../../examples/demo.toml");

/// Marks a data directory as the demo's own, so a rerun may clear it.
const MARKER: &str = ".toolgate-demo";

/// How the demo runs.
pub struct DemoOptions {
    /// The configuration; the built-in one when `None`.
    pub config: Option<Config>,
    /// Where its checkpoints, key, spools and history go (cleared first).
    pub data_dir: PathBuf,
    /// Agents in the fleet (five of them attack).
    pub agents: usize,
    /// How long the fleet runs.
    pub seconds: u64,
    /// Engine worker threads.
    pub workers: usize,
}

/// Makes `dir` empty and the demo's; refuses a directory the demo did not make.
fn fresh_data_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let ours = dir.join(MARKER).exists();
        let empty = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !ours && !empty {
            bail!(
                "{} exists and was not made by toolgate demo; choose another --data-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "toolgate demo data; removed by the next demo run\n",
    )
    .with_context(|| format!("cannot write in {}", dir.display()))
}

/// Runs the demo; `stop` (SIGINT) ends the fleet early.
pub fn run(options: DemoOptions, stop: &AtomicBool) -> Result<()> {
    let mut config = match options.config {
        Some(c) => c,
        None => {
            let mut c = Config::from_toml(CONFIG, "examples/demo.toml")?;
            c.resolve_environment("examples/demo.toml", |var| std::env::var_os(var))?;
            c
        }
    };
    fresh_data_dir(&options.data_dir)?;
    let data = options.data_dir.display().to_string();
    config.engine.data_dir = data.clone();
    config.history.location = format!("{data}/history");
    config.sink.spool_dir = format!("{data}/spool");
    let signer = load_or_create_signer(
        &data_path(&config, &config.engine.signing_key_file),
        &config.engine.key_id,
    )?;
    config
        .sink
        .decision_keys
        .insert(config.engine.key_id.clone(), signer.public_key_base64());

    let broker = EmbeddedBroker::start(&config.kafka.topics, 4)?;
    let brokers = broker.bootstrap().to_string();
    let out = Printer::new();
    out.line(format!(
        "toolgate demo: embedded broker on {brokers}; {} agents with servers {} for {} s; data in {data}",
        options.agents,
        fleet::SERVERS.join(", "),
        options.seconds
    ));
    out.line("  who       what      agent          detail".to_string());

    let counters = Arc::new(Counters::default());
    let engine_stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let config = config.clone();
        let brokers = brokers.clone();
        let counters = Arc::clone(&counters);
        let flag = Arc::clone(&engine_stop);
        let watcher_out = out.clone();
        let mut seen = BTreeSet::new();
        let watcher = Box::new(move |row: &Row| match row {
            Row::Finding(f) if seen.insert(f.finding_id.clone()) => watcher_out.line(format!(
                "  engine    {:<9} {:<14} {} {}/{}: {}",
                f.severity.as_str(),
                f.agent_id,
                f.detector.as_str(),
                f.server.as_deref().unwrap_or("-"),
                f.tool.as_deref().unwrap_or("-"),
                f.title
            )),
            Row::Decision(d) if d.action == DecisionAction::Block => watcher_out.line(format!(
                "  engine    {:<9} {:<14} {}{}/{} ({})",
                if d.scope.call_id.is_some() {
                    "verdict"
                } else {
                    "block"
                },
                d.scope.agent_id,
                d.scope
                    .call_id
                    .as_deref()
                    .map(|c| format!("call {c} "))
                    .unwrap_or_default(),
                d.scope.server.as_deref().unwrap_or("*"),
                d.scope.tool.as_deref().unwrap_or("*"),
                d.reason
            )),
            _ => {}
        });
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                toolgate_engine::run(
                    &config,
                    EngineOptions {
                        brokers,
                        workers: options.workers,
                        history: true,
                        watcher: Some(watcher),
                        counters,
                    },
                    &flag,
                )
            })
            .context("starting the engine")?
    };

    let fleet_stop = AtomicBool::new(false);
    let started = Instant::now();
    let stats = std::thread::scope(|scope| {
        let agents: Vec<_> = (0..options.agents)
            .map(|i| {
                let (config, brokers, out, fleet_stop) = (&config, &brokers, &out, &fleet_stop);
                scope.spawn(move || {
                    let say = |line: String| out.line(line);
                    fleet::run_agent(
                        i,
                        config,
                        brokers,
                        Duration::from_millis(40),
                        Duration::from_secs(2 + i as u64),
                        fleet_stop,
                        &say,
                    )
                })
            })
            .collect();
        let deadline = started + Duration::from_secs(options.seconds);
        let mut last = (Instant::now(), 0u64);
        while Instant::now() < deadline
            && !stop.load(Ordering::Relaxed)
            && !agents.iter().any(|a| a.is_finished())
        {
            std::thread::sleep(Duration::from_millis(250));
            if last.0.elapsed() >= Duration::from_secs(1) {
                let events = Counters::get(&counters.events);
                let rate = (events - last.1) as f64 / last.0.elapsed().as_secs_f64();
                out.progress(format!(
                    "{:5.1} s  events {events} ({rate:.0}/s)  findings {}  decisions {}",
                    started.elapsed().as_secs_f64(),
                    Counters::get(&counters.findings),
                    Counters::get(&counters.decisions),
                ));
                last = (Instant::now(), events);
            }
        }
        fleet_stop.store(true, Ordering::Relaxed);
        agents
            .into_iter()
            .map(|a| a.join().map_err(|_| anyhow!("an agent panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let sent: u64 = stats.iter().map(|s| s.events).sum();
    // Let the engine read what the sinks delivered before it stops.
    let drained = Instant::now() + Duration::from_secs(15);
    while Counters::get(&counters.events) < sent && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(50));
    }
    // And process what it holds for event-time order (a partition goes quiet after
    // `[engine] idle_timeout`); a stopped engine would only checkpoint them.
    let quiet = Instant::now() + config.engine.idle_timeout.to_std() + Duration::from_secs(5);
    // The workers report what they hold every 100 ms.
    std::thread::sleep(Duration::from_millis(250));
    while Counters::get(&counters.held) > 0 && Instant::now() < quiet {
        std::thread::sleep(Duration::from_millis(50));
    }
    engine_stop.store(true, Ordering::Relaxed);
    let report = engine
        .join()
        .map_err(|_| anyhow!("the engine panicked"))??;
    drop(broker);
    out.progress(String::new());
    let calls: u64 = stats.iter().map(|s| s.calls).sum();
    let refused: u64 = stats.iter().map(|s| s.refused).sum();
    out.line(format!(
        "\n{calls} calls ({refused} refused at the sinks), {sent} events; the engine read {} in {:.1} s: {} findings, {} decisions ({} verdicts on held calls)",
        report.events,
        report.seconds,
        report.findings_by_detector.values().sum::<u64>(),
        report.decisions,
        report.verdicts
    ));
    crate::commands::sql::print_queries(&config.history, SUMMARY)
}

/// The SQL summary over the run's history.
const SUMMARY: &[(&str, &str)] = &[
    (
        "Findings by detector and rule",
        "SELECT detector, rule_id, severity, count(DISTINCT finding_id) AS findings FROM findings GROUP BY detector, rule_id, severity ORDER BY findings DESC, detector, rule_id",
    ),
    (
        "Agents with findings",
        "SELECT agent_id, count(DISTINCT finding_id) AS findings, max(risk_score) AS max_risk FROM findings GROUP BY agent_id ORDER BY max_risk DESC, agent_id",
    ),
    (
        "Decisions sent to the sinks",
        "SELECT action, CASE WHEN call_id IS NULL THEN 'block' ELSE 'verdict' END AS kind, count(*) AS decisions FROM decisions GROUP BY 1, 2 ORDER BY 1, 2",
    ),
];

/// Lines to stdout; the progress line to stderr, redrawn in place on a terminal.
#[derive(Clone)]
struct Printer {
    lock: Arc<Mutex<bool>>,
}

impl Printer {
    fn new() -> Self {
        Printer {
            lock: Arc::new(Mutex::new(false)),
        }
    }

    fn line(&self, text: String) {
        let Ok(mut progress_shown) = self.lock.lock() else {
            return;
        };
        if *progress_shown {
            eprint!("\r\x1b[K");
            *progress_shown = false;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    fn progress(&self, text: String) {
        let Ok(mut progress_shown) = self.lock.lock() else {
            return;
        };
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K{text}");
            *progress_shown = !text.is_empty();
        } else if !text.is_empty() {
            eprintln!("{text}");
        }
    }
}
