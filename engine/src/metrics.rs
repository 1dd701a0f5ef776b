//! What the engine measures about itself, named in one place ([`EXPORTED`] and the
//! detectors' own `StateGauge`s), rendered in the Prometheus text format, and served
//! with a health check on `[engine] metrics_listen`: `GET /metrics`, `GET /healthz`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Counters;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0, 30.0,
];

/// A latency histogram, updated lock-free by the workers, and recorded in an
/// OpenTelemetry histogram too once one is exported.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    otel: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

impl Histogram {
    /// Records every later observation in `histogram` too.
    pub fn export(&self, histogram: opentelemetry::metrics::Histogram<f64>) {
        let _ = self.otel.set(histogram);
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(h) = self.otel.get() {
            h.record(s, &[]);
        }
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Gauges and labelled counters the engine sets as it runs.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Findings emitted, by detector.
    pub findings_by_detector: Mutex<BTreeMap<String, u64>>,
    /// Records dead-lettered, by cause.
    pub rejected_by_kind: Mutex<BTreeMap<String, u64>>,
    /// Block decisions not signed, by reason (`key_mismatch`, `rate_limit`).
    pub decisions_refused: Mutex<BTreeMap<String, u64>>,
    /// Records after the partition's committed offset, per partition (from the
    /// client's statistics): those not yet read, and those held for event-time order.
    pub lag: Mutex<BTreeMap<i32, i64>>,
    /// Detector state per partition, by the detectors' gauge names, and the reorder
    /// buffer's (`toolgate_engine_reorder_*`).
    pub state: Mutex<BTreeMap<(i32, &'static str), u64>>,
    /// Rows waiting for the history and output writers.
    pub writer_queue: AtomicI64,
    /// Records waiting for the workers.
    pub worker_queue: AtomicI64,
    /// Age of each event when processed: wall clock minus its event time.
    pub processing_latency: Histogram,
    /// From reading a held call's event to its verdict handed to the producer.
    pub verdict_latency: Histogram,
    /// The main loop's last turn, in milliseconds since start-up (for `/healthz`).
    pub heartbeat_ms: AtomicU64,
    /// Set once the writers failed; the engine is unhealthy until restarted.
    pub writer_failed: AtomicBool,
    /// Partitions of the events topic this member holds now; `/healthz` is not ready
    /// at 0 (before the group assigned any, or after they were all taken away).
    pub assigned_partitions: AtomicI64,
}

/// An exported counter: its name, its help text, and where it is read.
pub type Exported = (&'static str, &'static str, fn(&Counters) -> &AtomicU64);

/// An exported counter by one label: its name, its help text, the label, and the
/// counts by label value.
pub type Labelled = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Gauges) -> &Mutex<BTreeMap<String, u64>>,
);

/// Every engine counter by label.
pub const LABELLED: [Labelled; 3] = [
    (
        "toolgate_engine_findings_by_detector_total",
        "Findings emitted, by detector.",
        "detector",
        |g| &g.findings_by_detector,
    ),
    (
        "toolgate_engine_dead_letters_by_kind_total",
        "Records dead-lettered, by cause.",
        "kind",
        |g| &g.rejected_by_kind,
    ),
    (
        "toolgate_engine_decisions_refused_total",
        "Decisions not signed: key_mismatch (evidence from events whose record key is not their agent_id), rate_limit (past [engine] max_blocks_per_agent).",
        "reason",
        |g| &g.decisions_refused,
    ),
];

/// Every engine counter.
pub const EXPORTED: [Exported; 24] = [
    (
        "toolgate_engine_events_total",
        "Events decoded from the events topic.",
        |c| &c.events,
    ),
    (
        "toolgate_engine_dead_letters_total",
        "Records that failed to decode, sent to the dead-letter topic.",
        |c| &c.rejected,
    ),
    (
        "toolgate_engine_late_events_total",
        "Events older than what was already processed (still processed).",
        |c| &c.late,
    ),
    (
        "toolgate_engine_findings_total",
        "Findings emitted (first and final emissions).",
        |c| &c.findings,
    ),
    (
        "toolgate_engine_decisions_total",
        "Signed decisions sent to the sinks, verdicts included.",
        |c| &c.decisions,
    ),
    (
        "toolgate_engine_verdicts_total",
        "Verdicts on held calls.",
        |c| &c.verdicts,
    ),
    (
        "toolgate_engine_events_key_mismatch_total",
        "Events whose Kafka record key is not their agent_id: processed for findings, never for decisions.",
        |c| &c.key_mismatch,
    ),
    (
        "toolgate_engine_unowned_records_total",
        "Records of partitions no longer held, left to their new owner.",
        |c| &c.unowned,
    ),
    (
        "toolgate_engine_checkpoints_total",
        "Checkpoints written and committed.",
        |c| &c.checkpoints,
    ),
    (
        "toolgate_engine_checkpoint_failures_total",
        "Checkpoints that failed; offsets stayed uncommitted.",
        |c| &c.checkpoint_failures,
    ),
    (
        "toolgate_engine_rebalances_total",
        "Partition assignments and revocations served.",
        |c| &c.rebalances,
    ),
    (
        "toolgate_engine_offset_gaps_total",
        "Gaps in a partition's offsets: records deleted (retention) before they were read; each is logged and reported as a finding.",
        |c| &c.offset_gaps,
    ),
    (
        "toolgate_engine_offset_gap_events_total",
        "Offsets skipped in those gaps: records never read.",
        |c| &c.offset_gap_records,
    ),
    (
        "toolgate_otlp_requests_total",
        "OTLP/HTTP export requests accepted.",
        |c| &c.otlp.requests,
    ),
    (
        "toolgate_otlp_bad_requests_total",
        "OTLP/HTTP requests refused (undecodable, too large, wrong path or encoding).",
        |c| &c.otlp.bad_requests,
    ),
    (
        "toolgate_otlp_unauthorized_total",
        "OTLP/HTTP requests refused for a missing or wrong bearer token (401).",
        |c| &c.otlp.unauthorized,
    ),
    (
        "toolgate_otlp_publish_failures_total",
        "OTLP/HTTP requests answered 503 because their events could not be published for now.",
        |c| &c.otlp.publish_failures,
    ),
    (
        "toolgate_otlp_overloaded_total",
        "OTLP/HTTP connections answered 503 at once, unread: max_connections were open.",
        |c| &c.otlp.http.refused_connections,
    ),
    (
        "toolgate_otlp_read_timeouts_total",
        "OTLP/HTTP requests not whole within the read timeout, answered 408.",
        |c| &c.otlp.http.timed_out,
    ),
    (
        "toolgate_otlp_malformed_requests_total",
        "OTLP/HTTP requests the server does not read (bad framing, fields too large), 4xx.",
        |c| &c.otlp.http.malformed,
    ),
    (
        "toolgate_otlp_spans_total",
        "Spans received in accepted OTLP requests.",
        |c| &c.otlp.spans,
    ),
    (
        "toolgate_otlp_tool_spans_total",
        "GenAI tool spans turned into published events.",
        |c| &c.otlp.tool_spans,
    ),
    (
        "toolgate_otlp_rejected_spans_total",
        "GenAI tool spans rejected for good: not mappable, or an event too large to publish.",
        |c| &c.otlp.rejected_spans,
    ),
    (
        "toolgate_otlp_ignored_spans_total",
        "Spans that are not tool executions.",
        |c| &c.otlp.ignored_spans,
    ),
];

/// The Prometheus text exposition of everything.
pub fn render(counters: &Counters, gauges: &Gauges) -> String {
    let mut out = String::new();
    for (name, help, read) in EXPORTED {
        let value = Counters::get(read(counters));
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    for (name, help, label, counts) in LABELLED {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(counts) = counts(gauges).lock() {
            for (key, n) in counts.iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {n}");
            }
        }
    }
    let name = "toolgate_engine_consumer_lag";
    let _ = writeln!(
        out,
        "# HELP {name} Records of the events topic after the committed offset (not yet read, or held for event-time order), per partition.\n# TYPE {name} gauge"
    );
    if let Ok(lag) = gauges.lag.lock() {
        for (p, n) in lag.iter() {
            let _ = writeln!(out, "{name}{{partition=\"{p}\"}} {n}");
        }
    }
    if let Ok(state) = gauges.state.lock() {
        let mut last = "";
        for ((p, gauge), v) in state.iter() {
            if *gauge != last {
                let kind = if gauge.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                let _ = writeln!(out, "# TYPE {gauge} {kind}");
                last = gauge;
            }
            let _ = writeln!(out, "{gauge}{{partition=\"{p}\"}} {v}");
        }
    }
    for (name, help, value) in [
        (
            "toolgate_engine_writer_queue",
            "Rows waiting for the history and output writers.",
            &gauges.writer_queue,
        ),
        (
            "toolgate_engine_worker_queue",
            "Records waiting for the workers.",
            &gauges.worker_queue,
        ),
        (
            "toolgate_engine_assigned_partitions",
            "Partitions of the events topic this member holds.",
            &gauges.assigned_partitions,
        ),
    ] {
        let v = value.load(Ordering::Relaxed).max(0);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    gauges.processing_latency.render(
        &mut out,
        "toolgate_engine_processing_latency_seconds",
        "Age of each event when processed: wall clock minus its event time.",
    );
    gauges.verdict_latency.render(
        &mut out,
        "toolgate_engine_verdict_latency_seconds",
        "From reading a held call's event to its signed verdict handed to the producer.",
    );
    out
}

/// Counts one more under `key`.
pub fn count(counts: &Mutex<BTreeMap<String, u64>>, key: &str) {
    if let Ok(mut m) = counts.lock() {
        *m.entry(key.to_string()).or_default() += 1;
    }
}

/// Serves `/metrics` and `/healthz` on `listen` until the returned server is dropped.
pub fn serve(
    listen: &str,
    started: Instant,
    counters: Arc<Counters>,
    gauges: Arc<Gauges>,
) -> Result<toolgate_http::Running> {
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} for metrics"))?;
    // Scrapers and probes send small GETs: a few connections, no body.
    let server = toolgate_http::Server::new(
        "toolgate-metrics",
        toolgate_http::Limits {
            max_connections: 16,
            setting: "the metrics listener's 16 connections",
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_body: 0,
        },
        Arc::default(),
    );
    let handle = move |request: toolgate_http::Request<'_>| {
        let path = request.target.split('?').next().unwrap_or_default();
        let (status, body, kind) = match (request.method.as_str(), path) {
            _ if request.oversized || !request.body.is_empty() => {
                (413, "no body is taken here\n".to_string(), "text/plain")
            }
            ("GET", "/metrics") => (200, render(&counters, &gauges), "text/plain; version=0.0.4"),
            ("GET", "/healthz") => health(started, &gauges),
            (_, "/metrics" | "/healthz") => (405, "GET only\n".to_string(), "text/plain"),
            _ => (404, "not found\n".to_string(), "text/plain"),
        };
        let headers = [("Content-Type".to_string(), kind.to_string())];
        request.respond(status, &headers, body.as_bytes());
    };
    server
        .spawn(listener, "metrics", Arc::new(handle))
        .context("starting the metrics server")
}

/// `/healthz`: 200 only while the writers work, the consumer loop turns and partitions
/// are assigned.
fn health(started: Instant, gauges: &Gauges) -> (u16, String, &'static str) {
    let now = started.elapsed().as_millis() as u64;
    let beat = gauges.heartbeat_ms.load(Ordering::Relaxed);
    if gauges.writer_failed.load(Ordering::Relaxed) {
        (503, "writers failed\n".to_string(), "text/plain")
    } else if now.saturating_sub(beat) > 10_000 {
        (
            503,
            "the consumer loop is stuck\n".to_string(),
            "text/plain",
        )
    } else if gauges.assigned_partitions.load(Ordering::Relaxed) <= 0 {
        // Nothing is read yet: a rollout or a load balancer waiting on readiness must
        // not count this member as working.
        (
            503,
            "not ready: no partitions assigned\n".to_string(),
            "text/plain",
        )
    } else {
        (200, "ok\n".to_string(), "text/plain")
    }
}
