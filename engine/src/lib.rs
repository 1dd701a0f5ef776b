//! toolgate's engine: everything between events and the places findings go, for
//! `toolgate run` (a stream) and `toolgate analyze` (a replay). The root package is
//! the command line and the demo around it.
//!
//! The streaming engine, in this file: a consumer group member on the events topic,
//! per-partition workers running the detectors, findings and signed decisions back to
//! Kafka, dead letters, checkpoints, and the history and output writers. Detection is
//! the detectors crate's; decoding is the ingest crate's. Its guarantee is
//! at-least-once: a partition's offsets are committed only after its detector state was
//! checkpointed with them and every finding, decision and dead letter they caused was
//! acknowledged by the broker and written by the writers. A restart or a rebalance
//! resumes from the checkpoint; findings and decisions replayed after it carry the same
//! ids (and decisions the same bytes), so consumers deduplicate them.
#![deny(missing_docs)]

pub mod barrier;
pub mod checkpoint;
pub mod decision_log;
pub mod decisions;
pub mod detector_files;
pub mod driver;
pub mod embedded;
pub mod event_time;
pub mod metrics;
pub mod otel;
pub mod outbox;
pub mod outputs;
pub mod replay;
pub mod sources;
pub mod worker;
pub mod writers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use metrics::Gauges;
use serde::Serialize;
use toolgate_analytics::history::HistoryWriter;
use toolgate_detectors::secrets::Redactor;
use toolgate_detectors::{EmitPolicy, build_pipeline};
use toolgate_ingest::kafka::{Commit, PartitionOwner, RawRecord};
use toolgate_ingest::otlp::receiver::ReceiverCounters;
use toolgate_protocol::config::{Config, TopicsConfig};
use toolgate_protocol::decision::Decision;
use toolgate_protocol::{Finding, FindingAction};

use checkpoint::{Checkpoint, CheckpointStore};
use decisions::{Admission, BlockLimiter, DecisionMaker, load_or_create_signer};
use outbox::Outbox;
use sources::Next;
use worker::Work;
use writers::{Row, RowSender, Watcher, Writers};

/// How long a checkpoint waits for the broker to acknowledge what it must cover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the engine runs, beyond the config file.
pub struct EngineOptions {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Worker threads (partitions are spread over them).
    pub workers: usize,
    /// Keep the Parquet history (`[history]`).
    pub history: bool,
    /// Sees every row the writers write (the demo prints findings and blocks).
    pub watcher: Option<Watcher>,
    /// Where the engine counts, readable while it runs.
    pub counters: Arc<Counters>,
}

/// Counters, for the summary and for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events decoded.
    pub events: AtomicU64,
    /// Records that failed to decode (dead-lettered).
    pub rejected: AtomicU64,
    /// Events older than what was already processed (their partition's watermark, or
    /// their agent's last held call).
    pub late: AtomicU64,
    /// Events held for reordering now, across this member's partitions (updated by
    /// each worker every 100 ms).
    pub held: AtomicU64,
    /// Findings emitted (first and final emissions both count).
    pub findings: AtomicU64,
    /// Decisions sent, verdicts included.
    pub decisions: AtomicU64,
    /// Verdicts on held calls.
    pub verdicts: AtomicU64,
    /// Events whose record key was not their `agent_id` (they decide nothing).
    pub key_mismatch: AtomicU64,
    /// Records of partitions no longer held, left to their new owner.
    pub unowned: AtomicU64,
    /// Checkpoints completed.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed (offsets stayed uncommitted).
    pub checkpoint_failures: AtomicU64,
    /// Rebalances (revocations and assignments) served.
    pub rebalances: AtomicU64,
    /// Gaps in a partition's offsets: records gone (retention passed the checkpoint or
    /// the consumer) before they were read.
    pub offset_gaps: AtomicU64,
    /// Offsets skipped in those gaps, records never seen.
    pub offset_gap_records: AtomicU64,
    /// What the OTLP/HTTP receiver did.
    pub otlp: Arc<ReceiverCounters>,
}

impl Counters {
    fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value now.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What a run did.
#[derive(Debug, Default, Serialize)]
pub struct EngineReport {
    /// Events decoded.
    pub events: u64,
    /// Records dead-lettered, by cause.
    pub rejected_by_kind: BTreeMap<String, u64>,
    /// Late events.
    pub late: u64,
    /// Findings by detector.
    pub findings_by_detector: BTreeMap<String, u64>,
    /// Decisions sent.
    pub decisions: u64,
    /// Verdicts on held calls.
    pub verdicts: u64,
    /// Events whose record key was not their `agent_id`.
    pub key_mismatch: u64,
    /// Decisions not signed, by reason (`key_mismatch`, `rate_limit`).
    pub decisions_refused: BTreeMap<String, u64>,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Checkpoints that failed.
    pub checkpoint_failures: u64,
    /// Records the broker refused for good (kept in the data directory).
    pub undeliverable: u64,
    /// Gaps in the events' offsets (records deleted before they were read).
    pub offset_gaps: u64,
    /// Records lost in those gaps.
    pub offset_gap_records: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// What every worker shares.
pub struct Shared {
    config: Config,
    topics: TopicsConfig,
    outbox: Outbox,
    decisions: DecisionMaker,
    /// `[engine] max_blocks_per_agent` per `block_rate_window`.
    blocks: Mutex<BlockLimiter>,
    writer: RowSender,
    keep_events: bool,
    checkpoints: CheckpointStore,
    pins: Option<Vec<u8>>,
    counters: Arc<Counters>,
    gauges: Arc<Gauges>,
    /// Applied to dead-lettered records unless `[dead_letter] keep_raw`.
    dead_letter_redactor: Option<Redactor>,
}

impl Shared {
    /// Findings to the findings topic and the writers; blocking ones also become
    /// decisions, unless `forged` says their evidence came under another agent's key
    /// or the agent's blocks are over the rate limit.
    fn emit(&self, findings: &[Finding], forged: impl Fn(&Finding) -> bool) {
        for f in findings {
            self.counters.inc(&self.counters.findings);
            metrics::count(&self.gauges.findings_by_detector, f.detector.as_str());
            self.outbox.send(
                &self.topics.findings,
                f.agent_id.as_bytes(),
                f.to_json().as_bytes(),
                None,
            );
            if f.action == FindingAction::Block && forged(f) {
                self.refuse_decision(f, "key_mismatch");
            } else if let Some(d) = self.decisions.for_finding(f) {
                self.send_block(d, f);
            }
            self.write(Row::Finding(Box::new(f.clone())));
        }
    }

    /// A block within the agent's rate limit is sent; past it, it is counted and
    /// warned about once per burst.
    fn send_block(&self, decision: Decision, finding: &Finding) {
        let admission = match self.blocks.lock() {
            Ok(mut limiter) => limiter.admit(
                &decision.scope.agent_id,
                &decision.decision_id,
                decision.time,
            ),
            // A poisoned limiter must not stop blocks: they are still signed.
            Err(_) => Admission::Signed,
        };
        match admission {
            Admission::Signed | Admission::Repeat => self.send_decision(decision),
            Admission::Suppressed { first } => {
                metrics::count(&self.gauges.decisions_refused, "rate_limit");
                if first {
                    tracing::warn!(
                        agent_id = %finding.agent_id,
                        finding_id = %finding.finding_id,
                        max_blocks_per_agent = self.config.engine.max_blocks_per_agent,
                        block_rate_window = %self.config.engine.block_rate_window,
                        "block rate limit reached: further blocks for this agent are not signed until the window moves on; their findings still go out"
                    );
                }
            }
        }
    }

    /// A blocking finding whose evidence came under another key: no decision.
    fn refuse_decision(&self, finding: &Finding, reason: &str) {
        metrics::count(&self.gauges.decisions_refused, reason);
        let refused = self
            .gauges
            .decisions_refused
            .lock()
            .map(|m| m.get(reason).copied().unwrap_or(0))
            .unwrap_or(0);
        // A forger can repeat this at will: said now and then, counted always.
        if refused.is_power_of_two() {
            tracing::warn!(
                agent_id = %finding.agent_id,
                finding_id = %finding.finding_id,
                reason,
                refused,
                "no decision: the finding rests on events whose Kafka record key is not their agent_id"
            );
        }
    }

    fn send_decision(&self, decision: Decision) {
        self.counters.inc(&self.counters.decisions);
        let payload = serde_json::to_vec(&decision).unwrap_or_default();
        self.outbox.send(
            &self.topics.decisions,
            decision.scope.agent_id.as_bytes(),
            &payload,
            None,
        );
        self.write(Row::Decision(Box::new(decision)));
    }

    fn write(&self, row: Row) {
        // The writer thread only stops at shutdown or after reporting its error.
        let _ = self.writer.send(row);
    }
}

/// Hands partitions to workers and takes checkpoints across them.
struct Coordinator {
    shared: Arc<Shared>,
    workers: Vec<SyncSender<Work>>,
    /// Records fetched but not yet handed to their worker, per worker: they travel in
    /// batches, and every batch goes out before a snapshot or an assignment does.
    pending: Mutex<Vec<Vec<RawRecord>>>,
}

/// Records handed to a worker at once, at most.
const BATCH: usize = 256;

impl Coordinator {
    fn worker_of(&self, partition: i32) -> usize {
        usize::try_from(partition).unwrap_or(0) % self.workers.len()
    }

    /// Queues a record for its partition's worker; a full batch is sent.
    fn dispatch(&self, record: RawRecord) -> Result<()> {
        let w = self.worker_of(record.partition);
        let full = {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| anyhow!("the dispatch queue is poisoned"))?;
            pending[w].push(record);
            (pending[w].len() >= BATCH).then(|| std::mem::take(&mut pending[w]))
        };
        match full {
            Some(batch) => self.send(w, batch),
            None => Ok(()),
        }
    }

    /// Sends every queued record to its worker.
    fn flush_pending(&self) -> Result<()> {
        let batches: Vec<Vec<RawRecord>> = {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| anyhow!("the dispatch queue is poisoned"))?;
            pending.iter_mut().map(std::mem::take).collect()
        };
        for (w, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                self.send(w, batch)?;
            }
        }
        Ok(())
    }

    fn send(&self, w: usize, batch: Vec<RawRecord>) -> Result<()> {
        self.shared
            .gauges
            .worker_queue
            .fetch_add(batch.len() as i64, Ordering::Relaxed);
        self.workers[w]
            .send(Work::Records(batch))
            .map_err(|_| anyhow!("worker {w} stopped"))
    }

    /// Snapshots the partitions (all when `None`), waits until everything they
    /// caused is acknowledged and written, saves the checkpoints, and returns the
    /// offsets that may now be committed.
    fn checkpoint(&self, partitions: Option<&[i32]>, release: bool) -> Result<Vec<(i32, i64)>> {
        self.flush_pending()?;
        let mut answers = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            let mine = partitions.map(|ps| {
                ps.iter()
                    .copied()
                    .filter(|p| self.worker_of(*p) == i)
                    .collect::<Vec<_>>()
            });
            if mine.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let (reply, answer) = sync_channel(1);
            w.send(Work::Snapshot {
                partitions: mine,
                release,
                reply,
            })
            .map_err(|_| anyhow!("worker {i} stopped"))?;
            answers.push(answer);
        }
        let mut checkpoints: Vec<(i32, Checkpoint)> = Vec::new();
        for a in answers {
            let got = a.recv().map_err(|_| anyhow!("a worker stopped"))?;
            checkpoints.extend(got.map_err(|e| anyhow!(e))?);
        }
        self.shared.outbox.settle(SETTLE_TIMEOUT)?;
        if let Err(e) = self.shared.writer.flush() {
            self.shared
                .gauges
                .writer_failed
                .store(true, Ordering::Relaxed);
            return Err(e);
        }
        for (p, c) in &checkpoints {
            self.shared.checkpoints.save(*p, c)?;
        }
        Ok(checkpoints
            .into_iter()
            .map(|(p, c)| (p, c.commit_offset))
            .collect())
    }
}

impl PartitionOwner for Coordinator {
    fn lag(&self, lags: &[(i32, i64)]) {
        if let Ok(mut lag) = self.shared.gauges.lag.lock() {
            lag.clear();
            lag.extend(lags.iter().copied());
        }
    }

    fn assigned(&self, partitions: &[i32]) -> Vec<Option<i64>> {
        self.shared.counters.inc(&self.shared.counters.rebalances);
        // `/healthz` is not ready while this member holds no partition.
        self.shared
            .gauges
            .assigned_partitions
            .fetch_add(partitions.len() as i64, Ordering::Relaxed);
        if let Err(e) = self.flush_pending() {
            tracing::error!(error = format!("{e:#}"), "assigning");
        }
        let mut starts = BTreeMap::new();
        for (i, w) in self.workers.iter().enumerate() {
            let mine: Vec<i32> = partitions
                .iter()
                .copied()
                .filter(|p| self.worker_of(*p) == i)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let (reply, answer) = sync_channel(1);
            if w.send(Work::Assign {
                partitions: mine.clone(),
                reply,
            })
            .is_ok()
                && let Ok(got) = answer.recv()
            {
                starts.extend(mine.into_iter().zip(got));
            }
        }
        let starts: Vec<Option<i64>> = partitions
            .iter()
            .map(|p| starts.get(p).copied().flatten())
            .collect();
        tracing::info!(?partitions, from_checkpoints = ?starts, "assigned partitions");
        starts
    }

    fn revoked(&self, partitions: &[i32], commit: Commit<'_>) {
        self.shared.counters.inc(&self.shared.counters.rebalances);
        self.shared
            .gauges
            .assigned_partitions
            .fetch_sub(partitions.len() as i64, Ordering::Relaxed);
        match self.checkpoint(Some(partitions), true) {
            Ok(offsets) => {
                if let Err(e) = commit(&offsets) {
                    tracing::warn!(?partitions, error = %e, "revoking: commit failed");
                }
                self.shared.counters.inc(&self.shared.counters.checkpoints);
            }
            Err(e) => {
                self.shared
                    .counters
                    .inc(&self.shared.counters.checkpoint_failures);
                tracing::error!(
                    ?partitions,
                    error = format!("{e:#}"),
                    "revoking: checkpoint failed; their next owner replays from the previous checkpoint"
                );
            }
        }
        tracing::info!(?partitions, "revoked partitions");
    }
}

/// Reads the pins file the config names, if it exists.
fn read_pins(config: &Config) -> Result<Option<Vec<u8>>> {
    match config.pins_file() {
        Some(path) => toolgate_edge::fs::read_if_exists(&path).context("cannot read the pins file"),
        None => Ok(None),
    }
}

/// The redactor `[redaction]` configures, or `None` when it is off: what the history,
/// the dead letters and the OTLP receiver's events are redacted with.
pub fn configured_redactor(config: &Config) -> Result<Option<Redactor>> {
    if !config.redaction.enabled {
        return Ok(None);
    }
    Ok(Some(Redactor::new(&config.redaction)?))
}

/// The engine's data directory and the paths under it.
pub fn data_path(config: &Config, relative: &str) -> PathBuf {
    let p = Path::new(relative);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(&config.engine.data_dir).join(p)
    }
}

/// Runs until `stop` is set; then checkpoints, commits and returns what it did.
pub fn run(config: &Config, options: EngineOptions, stop: &AtomicBool) -> Result<EngineReport> {
    let started = Instant::now();
    if options.workers == 0 {
        bail!("at least one worker is needed");
    }
    let config = config.clone();
    build_pipeline(&config, EmitPolicy::FirstAndFinal).context("building the detectors")?;
    let data_dir = PathBuf::from(&config.engine.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let signer = load_or_create_signer(
        &data_path(&config, &config.engine.signing_key_file),
        &config.engine.key_id,
    )?;
    let decisions =
        DecisionMaker::new(signer, config.engine.decision_ttl).with_blocks(&config.engine.blocks);
    let (key_id, public_key) = decisions.public_key();
    tracing::info!(
        key_id,
        public_key,
        "decisions are signed with key {key_id:?}; sinks trust it with [sink.decision_keys] {key_id} = \"{public_key}\""
    );
    let history = if options.history {
        let redactor = configured_redactor(&config)?;
        Some(
            HistoryWriter::open(&config.history, redactor)
                .with_context(|| format!("opening history {}", config.history.location))?,
        )
    } else {
        None
    };
    let gauges = Arc::new(Gauges::default());
    let writers = Writers::start(
        history,
        &config.outputs,
        &data_dir,
        options.watcher,
        Arc::clone(&gauges),
    )?;
    let properties: Vec<(String, String)> = config
        .kafka
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let outbox = Outbox::new(
        &options.brokers,
        &properties,
        data_dir.join("undeliverable.jsonl"),
    )?;
    let shared = Arc::new(Shared {
        topics: config.kafka.topics.clone(),
        outbox,
        decisions,
        blocks: Mutex::new(BlockLimiter::new(
            config.engine.max_blocks_per_agent,
            config.engine.block_rate_window,
        )),
        writer: writers.sender()?,
        keep_events: writers.wants_events(),
        checkpoints: CheckpointStore::new(
            &data_dir,
            &config.kafka.group_id,
            &config.kafka.topics.events,
        ),
        pins: read_pins(&config)?,
        counters: options.counters,
        gauges,
        dead_letter_redactor: if config.dead_letter.keep_raw {
            None
        } else {
            configured_redactor(&config)?
        },
        config,
    });
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for i in 0..options.workers {
        let (tx, rx) = sync_channel(1024);
        let s = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker::run(s, rx))
                .context("starting a worker")?,
        );
        senders.push(tx);
    }
    let coordinator = Arc::new(Coordinator {
        shared: Arc::clone(&shared),
        pending: Mutex::new(vec![Vec::new(); senders.len()]),
        workers: senders,
    });
    let mut input = sources::open_input(
        "kafka",
        &sources::InputContext {
            config: &shared.config,
            location: None,
            brokers: &options.brokers,
            properties: &properties,
            owner: Some(coordinator.clone()),
        },
    )?;
    // Served until the run ends, when this is dropped.
    let metrics_server = match &shared.config.engine.metrics_listen {
        None => None,
        Some(listen) => {
            let running = metrics::serve(
                listen,
                started,
                Arc::clone(&shared.counters),
                Arc::clone(&shared.gauges),
            )?;
            let addr = running.local_addr();
            tracing::info!(%addr, "metrics on http://{addr}/metrics, health on http://{addr}/healthz");
            Some(running)
        }
    };
    let otel_metrics = match &shared.config.engine.metrics_otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let every = shared.config.engine.metrics_otlp_interval;
            let exporter = otel::OtelMetrics::start(
                endpoint,
                every.to_std(),
                &shared.counters,
                &shared.gauges,
            )?;
            tracing::info!(endpoint = %endpoint, "metrics pushed with OTLP to {endpoint} every {every}");
            Some(exporter)
        }
    };
    let receivers = sources::start_receivers(&sources::ReceiverContext {
        config: &shared.config,
        brokers: &options.brokers,
        properties: &properties,
        counters: &shared.counters,
    })?;
    let interval = shared.config.engine.checkpoint_interval.to_std();
    let mut next_checkpoint = Instant::now() + interval;
    let mut poll_errors = 0u64;
    // An input that ends stops the stream as a signal would: what is buffered is
    // checkpointed, not processed, and a restart carries on from it.
    let mut ended = false;
    while !ended && !stop.load(Ordering::Relaxed) {
        shared
            .gauges
            .heartbeat_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        // Whatever is fetched already is taken in one go and handed over in batches;
        // the batches leave as soon as nothing more is waiting, so a held call's
        // record never waits for a batch to fill.
        let mut polled = input.next(Duration::from_millis(50));
        let mut taken = 0;
        loop {
            match polled {
                Ok(Next::Record(record)) => {
                    coordinator.dispatch(record)?;
                    taken += 1;
                }
                Ok(Next::Idle) => break,
                Ok(Next::Ended) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    poll_errors += 1;
                    // A broker outage repeats the same error; say it now and then.
                    if poll_errors.is_power_of_two() {
                        tracing::warn!(error = %e, poll_errors, "reading the {} input", input.kind());
                    }
                    break;
                }
            }
            if taken >= BATCH * coordinator.workers.len() {
                break;
            }
            polled = input.next(Duration::ZERO);
        }
        coordinator.flush_pending()?;
        if Instant::now() >= next_checkpoint {
            checkpoint_and_commit(&coordinator, input.as_mut());
            next_checkpoint = Instant::now() + interval;
        }
    }
    drop(receivers);
    checkpoint_and_commit(&coordinator, input.as_mut());
    drop(metrics_server);
    if let Some(exporter) = otel_metrics
        && let Err(e) = exporter.shutdown()
    {
        tracing::warn!(error = format!("{e:#}"), "exporting metrics");
    }
    // Leaving the group revokes what is left (a last checkpoint of nothing new).
    drop(input);
    let coordinator = Arc::into_inner(coordinator)
        .ok_or_else(|| anyhow!("the consumer still holds the coordinator"))?;
    let Coordinator {
        workers,
        shared: held,
        pending: _,
    } = coordinator;
    drop((workers, held));
    for t in threads {
        t.join().map_err(|_| anyhow!("a worker panicked"))?;
    }
    let shared = Arc::into_inner(shared).ok_or_else(|| anyhow!("a worker still runs"))?;
    shared.outbox.settle(SETTLE_TIMEOUT)?;
    drop(shared.writer);
    let history = writers.close()?;
    if let Some(h) = history {
        tracing::info!(
            rows = h.rows_published,
            files = h.files_published,
            location = %shared.config.history.location,
            "history written"
        );
    }
    let c = &shared.counters;
    let get = Counters::get;
    Ok(EngineReport {
        events: get(&c.events),
        rejected_by_kind: take(&shared.gauges.rejected_by_kind),
        late: get(&c.late),
        findings_by_detector: take(&shared.gauges.findings_by_detector),
        decisions: get(&c.decisions),
        verdicts: get(&c.verdicts),
        key_mismatch: get(&c.key_mismatch),
        decisions_refused: take(&shared.gauges.decisions_refused),
        checkpoints: get(&c.checkpoints),
        checkpoint_failures: get(&c.checkpoint_failures),
        undeliverable: shared.outbox.undeliverable(),
        offset_gaps: get(&c.offset_gaps),
        offset_gap_records: get(&c.offset_gap_records),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn take(counts: &Mutex<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    counts.lock().map(|m| m.clone()).unwrap_or_default()
}

fn checkpoint_and_commit(coordinator: &Coordinator, input: &mut dyn sources::Input) {
    let counters = &coordinator.shared.counters;
    let done = coordinator
        .checkpoint(None, false)
        .and_then(|offsets| input.commit(&offsets).map_err(anyhow::Error::from));
    match done {
        Ok(()) => counters.inc(&counters.checkpoints),
        Err(e) => {
            counters.inc(&counters.checkpoint_failures);
            tracing::error!(
                error = format!("{e:#}"),
                "checkpoint failed; offsets stay uncommitted until the next one"
            );
        }
    }
}
