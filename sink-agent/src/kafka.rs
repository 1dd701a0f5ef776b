//! The Kafka edge of the sink: the shipper that takes events from the proxy threads,
//! spools them and produces them to `toolgate.events` (key = `agent_id`), and the
//! subscriber that reads signed decisions from the one partition of
//! `toolgate.decisions` that holds this agent's.
//!
//! The proxy threads never wait on Kafka: they hand an event to a bounded channel and
//! go on (a full channel is a dropped, counted event). The shipper appends everything
//! to the [`Spool`] first and produces from it in order, at most [`WINDOW`] records
//! in flight; a record leaves the spool only when the broker acknowledged it. While the
//! broker is down, librdkafka retries the records in flight without a deadline
//! (`message.timeout.ms = 0`) and the rest wait on disk, so an outage of any length
//! loses nothing until the spool is full. Events dropped for want of room are reported
//! on `toolgate.findings` as soon as a delivery succeeds again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::json;
use toolgate_detectors::finding_id;
use toolgate_protocol::config::Config;
use toolgate_protocol::partition::partition_for;
use toolgate_protocol::{
    DetectorKind, Finding, FindingAction, FindingOutcome, Severity, Timestamp,
};

use crate::SinkError;
use crate::decisions::Rejected;
use crate::session::Identity;
use crate::spool::{Spool, SpoolError};

/// Records produced and not yet acknowledged, at most.
pub const WINDOW: u64 = 10_000;
/// Events waiting between the proxy threads and the shipper, at most.
const CHANNEL: usize = 65_536;
/// Delivery-report opaque of the dropped-events finding (event opaques are spool
/// sequence numbers, which never get this high).
const REPORT: usize = usize::MAX;

/// Where the sink's Kafka traffic goes: `[kafka]` and `[sink]` of the config.
#[derive(Debug, Clone)]
pub struct KafkaLink {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    /// `[kafka.properties]`, applied last (they win over the sink's own settings).
    pub properties: BTreeMap<String, String>,
    /// `[kafka.topics] events`.
    pub events_topic: String,
    /// `[kafka.topics] findings`.
    pub findings_topic: String,
    /// `[kafka.topics] decisions`.
    pub decisions_topic: String,
    /// `[sink] spool_dir`.
    pub spool_dir: PathBuf,
    /// `[sink] spool_max_bytes`.
    pub spool_max_bytes: u64,
    /// `[sink] flush_timeout_ms`.
    pub flush_timeout: Duration,
    /// Largest event produced (`[sink] max_message_bytes` plus room for the envelope).
    pub max_message_bytes: usize,
    /// `[sink] decision_fetch_wait_ms`.
    pub decision_fetch_wait_ms: u64,
}

impl KafkaLink {
    /// The link `config` asks for, with `brokers` (from the command line) winning over
    /// `[kafka] brokers`; `None` when neither names a broker.
    pub fn from_config(config: &Config, brokers: Option<&str>) -> Option<KafkaLink> {
        let brokers = match brokers {
            Some(b) if !b.is_empty() => b.to_string(),
            _ if !config.kafka.brokers.is_empty() => config.kafka.brokers.join(","),
            _ => return None,
        };
        Some(KafkaLink {
            brokers,
            properties: config.kafka.properties.clone(),
            events_topic: config.kafka.topics.events.clone(),
            findings_topic: config.kafka.topics.findings.clone(),
            decisions_topic: config.kafka.topics.decisions.clone(),
            spool_dir: PathBuf::from(&config.sink.spool_dir),
            spool_max_bytes: config.sink.spool_max_bytes,
            flush_timeout: Duration::from_millis(config.sink.flush_timeout_ms),
            max_message_bytes: config.sink.max_message_bytes
                + toolgate_protocol::event::EVENT_ENVELOPE_BYTES,
            decision_fetch_wait_ms: config.sink.decision_fetch_wait_ms,
        })
    }

    /// A client with the sink's `settings`, then `[kafka.properties]`.
    fn client_config<'a>(
        &'a self,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> ClientConfig {
        toolgate_edge::kafka::client(
            &self.brokers,
            [("client.id", "toolgate-sink")].into_iter().chain(settings),
            &self.properties,
        )
    }

    fn producer_config(&self) -> ClientConfig {
        let (max_bytes, queue) = (self.max_message_bytes.to_string(), (WINDOW * 2).to_string());
        let settings = [
            // Low latency over batching: a held call waits for its own event to arrive.
            ("linger.ms", "1"),
            // No deadline: the spool, not librdkafka, decides when an event is given up.
            ("message.timeout.ms", "0"),
            ("message.max.bytes", max_bytes.as_str()),
            ("queue.buffering.max.messages", queue.as_str()),
        ];
        self.client_config(toolgate_edge::kafka::PRODUCER.into_iter().chain(settings))
    }
}

/// What the shipper did, for the summary at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Shipped {
    /// Events the broker acknowledged.
    pub delivered: u64,
    /// Events dropped: the spool was full, or the shipper could not keep up.
    pub dropped: u64,
    /// Events the broker refused for good (too large for the topic, say).
    pub rejected: u64,
    /// Events left in the spool at exit, for the next start.
    pub pending: u64,
    /// Dropped-events findings published.
    pub drop_reports: u64,
}

/// The proxy threads' handle on the shipper.
pub struct Shipper {
    sender: Option<SyncSender<(String, Vec<u8>)>>,
    overflow: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<Shipped, SinkError>>>,
}

impl Shipper {
    /// Opens the spool for `identity.server` under the link's spool directory (the
    /// first free one of `NAME`, `NAME.1`, … when other proxies of the same server run)
    /// and starts the shipper thread, which first replays what an earlier run left.
    pub fn start(link: KafkaLink, identity: Identity) -> Result<Shipper, SinkError> {
        let spool = open_spool(&link.spool_dir, &identity.server, link.spool_max_bytes)?;
        let context = ShipperContext::default();
        let producer: BaseProducer<ShipperContext> = link
            .producer_config()
            .create_with_context(context)
            .map_err(|e| SinkError::Kafka(format!("cannot create the producer: {e}")))?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL);
        let overflow = Arc::new(AtomicU64::new(0));
        let thread = {
            let overflow = overflow.clone();
            std::thread::Builder::new()
                .name("kafka-shipper".into())
                .spawn(move || {
                    ShipLoop {
                        link,
                        identity,
                        spool,
                        producer,
                        overflow,
                        in_flight: 0,
                        done: BTreeSet::new(),
                        resend_from: None,
                        shipped: Shipped::default(),
                        report_in_flight: None,
                        delivered_since_drop: false,
                    }
                    .run(receiver)
                })
                .map_err(|e| SinkError::Task(e.to_string()))?
        };
        Ok(Shipper {
            sender: Some(sender),
            overflow,
            thread: Some(thread),
        })
    }

    /// Hands one event (its JSON) to the shipper without waiting.
    pub fn send(&self, key: &str, value: Vec<u8>) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send((key.to_string(), value)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stops taking events and waits for the shipper to deliver what it can within the
    /// flush timeout; the rest stays in the spool.
    pub fn close(&mut self) -> Result<Shipped, SinkError> {
        self.sender = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| SinkError::Task("the Kafka shipper panicked".into()))?,
            None => Ok(Shipped::default()),
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn open_spool(dir: &Path, server: &str, max_bytes: u64) -> Result<Spool, SinkError> {
    let name = toolgate_protocol::config::file_name_of(server);
    for n in 0..64 {
        let path = if n == 0 {
            dir.join(&name)
        } else {
            dir.join(format!("{name}.{n}"))
        };
        match Spool::open(&path, max_bytes) {
            Ok(s) => return Ok(s),
            Err(SpoolError::Busy(_)) => continue,
            Err(e) => return Err(SinkError::Spool(e)),
        }
    }
    Err(SinkError::Spool(SpoolError::Busy(dir.join(name))))
}

#[derive(Default)]
struct ShipperContext {
    deliveries: Mutex<Vec<(usize, Option<RDKafkaErrorCode>)>>,
    /// Set while the broker is unreachable, so the outage is logged once.
    down: AtomicBool,
}

impl ClientContext for ShipperContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let unreachable = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::Resolve
            )
        );
        // An outage is said once, not at every reconnection attempt.
        if !unreachable || !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%reason, "kafka unreachable; events are spooled until it is back");
        }
    }
}

impl ProducerContext for ShipperContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let error = result
            .as_ref()
            .err()
            .and_then(|(e, _)| e.rdkafka_error_code());
        let error = match (result, error) {
            (Err(_), None) => Some(RDKafkaErrorCode::Fail),
            (_, e) => e,
        };
        if let Ok(mut d) = self.deliveries.lock() {
            d.push((opaque, error));
        }
    }
}

/// A broker answer that will not change if the record is sent again.
fn permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
    )
}

struct ShipLoop {
    link: KafkaLink,
    identity: Identity,
    spool: Spool,
    producer: BaseProducer<ShipperContext>,
    overflow: Arc<AtomicU64>,
    in_flight: u64,
    /// Delivered (or given up) records past the spool's acknowledged position.
    done: BTreeSet<u64>,
    /// After a failed delivery: read the spool again from here once nothing is in
    /// flight, skipping what was delivered since.
    resend_from: Option<u64>,
    shipped: Shipped,
    /// Drops counted in the report being delivered.
    report_in_flight: Option<u64>,
    delivered_since_drop: bool,
}

impl ShipLoop {
    fn run(mut self, events: Receiver<(String, Vec<u8>)>) -> Result<Shipped, SinkError> {
        let mut closing: Option<Instant> = None;
        loop {
            let busy = self.in_flight > 0 || self.spool.pending() > self.in_flight;
            let wait = Duration::from_millis(if busy { 1 } else { 20 });
            let take = |this: &mut Self, key: String, value: Vec<u8>| {
                if !this.spool.append(key.as_bytes(), &value)? {
                    this.dropped(1);
                }
                Ok::<(), SpoolError>(())
            };
            match events.recv_timeout(wait) {
                Ok((key, value)) => {
                    take(&mut self, key, value)?;
                    while let Ok((key, value)) = events.try_recv() {
                        take(&mut self, key, value)?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    closing.get_or_insert_with(|| Instant::now() + self.link.flush_timeout);
                }
            }
            let overflow = self.overflow.swap(0, Ordering::Relaxed);
            if overflow > 0 {
                self.spool.add_dropped(overflow);
                self.dropped(overflow);
            }
            self.spool.flush()?;
            self.produce()?;
            self.producer.poll(Duration::ZERO);
            self.settle()?;
            self.report_drops();
            if let Some(deadline) = closing
                && ((self.in_flight == 0 && self.spool.pending() == 0 && self.report_done())
                    || Instant::now() >= deadline)
            {
                break;
            }
        }
        self.shipped.pending = self.spool.pending();
        self.spool.save_state()?;
        Ok(self.shipped)
    }

    /// Counts dropped events; the report waits for a delivery after the last drop, so
    /// one report covers a whole outage.
    fn dropped(&mut self, count: u64) {
        self.shipped.dropped += count;
        self.delivered_since_drop = false;
    }

    fn produce(&mut self) -> Result<(), SinkError> {
        if self.resend_from.is_some() {
            return Ok(());
        }
        while self.in_flight < WINDOW {
            let Some(record) = self.spool.read_next()? else {
                break;
            };
            if self.done.contains(&record.seq) {
                continue;
            }
            let seq = record.seq;
            let sent = self.producer.send(
                BaseRecord::with_opaque_to(&self.link.events_topic, seq as usize)
                    .key(&record.key)
                    .payload(&record.value),
            );
            match sent {
                Ok(()) => self.in_flight += 1,
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    self.spool.seek(seq)?;
                    break;
                }
                Err((e, _)) => {
                    // Refused before it left the process (larger than message.max.bytes).
                    tracing::error!(seq, error = %e, "event not sent");
                    self.shipped.rejected += 1;
                    self.done.insert(seq);
                }
            }
        }
        Ok(())
    }

    /// Takes the delivery reports and moves the spool's acknowledged position.
    fn settle(&mut self) -> Result<(), SinkError> {
        let reports = match self.producer.context().deliveries.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => Vec::new(),
        };
        for (opaque, error) in reports {
            if opaque == REPORT {
                match (error, self.report_in_flight.take()) {
                    (None, Some(count)) => {
                        self.spool.reported_dropped(count)?;
                        self.shipped.drop_reports += 1;
                    }
                    (Some(code), _) => tracing::warn!(
                        %code,
                        "the dropped-events report was not delivered; it is sent again"
                    ),
                    (None, None) => {}
                }
                continue;
            }
            let seq = opaque as u64;
            self.in_flight = self.in_flight.saturating_sub(1);
            match error {
                None => {
                    self.shipped.delivered += 1;
                    self.done.insert(seq);
                    self.delivered_since_drop = true;
                    if self.producer.context().down.swap(false, Ordering::Relaxed) {
                        tracing::info!("kafka reachable again; delivering");
                    }
                }
                Some(code) if permanent(code) => {
                    tracing::error!(seq, %code, "the broker refused an event");
                    self.shipped.rejected += 1;
                    self.done.insert(seq);
                }
                Some(code) => {
                    if self.resend_from.is_none() {
                        tracing::warn!(seq, %code, "event not delivered; sent again");
                    }
                    self.resend_from = Some(self.resend_from.map_or(seq, |s| s.min(seq)));
                }
            }
        }
        let mut acked = self.spool.acked();
        while self.done.remove(&acked) {
            acked += 1;
        }
        self.spool.ack(acked)?;
        if let Some(seq) = self.resend_from
            && self.in_flight == 0
        {
            if self.producer.client().fatal_error().is_some() {
                self.producer = self
                    .link
                    .producer_config()
                    .create_with_context(ShipperContext::default())
                    .map_err(|e| SinkError::Kafka(format!("cannot create the producer: {e}")))?;
            }
            self.spool.seek(seq)?;
            self.resend_from = None;
        }
        Ok(())
    }

    /// Once deliveries succeed again after events were dropped, says so on the findings
    /// topic: a gap in what the engine saw is itself worth an analyst's look.
    fn report_drops(&mut self) {
        let dropped = self.spool.dropped();
        if dropped == 0 || self.report_in_flight.is_some() || !self.delivered_since_drop {
            return;
        }
        let finding = dropped_finding(&self.identity, dropped, self.link.spool_max_bytes);
        let json = finding.to_json();
        let sent = self.producer.send(
            BaseRecord::with_opaque_to(&self.link.findings_topic, REPORT)
                .key(&self.identity.agent_id)
                .payload(&json),
        );
        if sent.is_ok() {
            self.report_in_flight = Some(dropped);
            self.delivered_since_drop = false;
        }
    }

    fn report_done(&self) -> bool {
        self.report_in_flight.is_none() && (self.spool.dropped() == 0 || !self.delivered_since_drop)
    }
}

/// The finding that says events were dropped.
pub fn dropped_finding(identity: &Identity, dropped: u64, spool_max_bytes: u64) -> Finding {
    const RULE: &str = "sink-events-dropped";
    let now = Timestamp::now();
    let group = format!(
        "{}/{}/{}",
        identity.agent_id, identity.session_id, identity.server
    );
    Finding {
        schema: Default::default(),
        finding_id: finding_id(DetectorKind::Volume, RULE, &group, now),
        time: now,
        first_seen: now,
        last_seen: now,
        count: dropped,
        detector: DetectorKind::Volume,
        rule_id: RULE.into(),
        title: format!("toolgate-sink dropped {dropped} events while Kafka was unreachable"),
        description: format!(
            "The sink for server {:?} could not deliver events and its spool ({spool_max_bytes} bytes) filled up; {dropped} events were dropped. The engine did not see those tool calls: a flood of calls during an outage can hide one that matters.",
            identity.server
        ),
        severity: Severity::High,
        risk_score: 70,
        confidence: 1.0,
        agent_id: identity.agent_id.clone(),
        session_id: identity.session_id.clone(),
        server: Some(identity.server.clone()),
        tool: None,
        call_id: None,
        event_ids: Vec::new(),
        evidence: json!({ "dropped_events": dropped, "spool_max_bytes": spool_max_bytes }),
        tags: vec!["toolgate:telemetry-gap".into()],
        action: FindingAction::Alert,
        outcome: Some(FindingOutcome::Observed),
    }
}

/// What the decision subscriber saw, for the summary at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct DecisionCounts {
    /// Decisions applied.
    pub applied: u64,
    /// Decisions for other agents sharing the partition.
    pub other_agents: u64,
    /// Forged, unverifiable, expired or malformed decisions (each logged).
    pub ignored: u64,
}

/// Reads signed decisions for this agent and applies them to the session.
pub struct DecisionSubscriber {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<DecisionCounts>>,
}

impl DecisionSubscriber {
    /// Starts reading the partition of the decisions topic that holds `agent_id`, from
    /// its beginning (decisions carry their own expiry), and handing each decision's
    /// bytes to `apply`, which verifies and keeps it (see [`Session::apply_decision`]).
    pub fn start(
        link: &KafkaLink,
        agent_id: String,
        apply: impl FnMut(&[u8]) -> Result<String, Rejected> + Send + 'static,
    ) -> Result<DecisionSubscriber, SinkError> {
        let fetch_wait = link.decision_fetch_wait_ms.to_string();
        let config = link.client_config([
            ("group.id", "toolgate-sink"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "false"),
            // A verdict sits on the path of a held call (see the config field).
            ("fetch.wait.max.ms", fetch_wait.as_str()),
        ]);
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| SinkError::Kafka(format!("cannot create the decision reader: {e}")))?;
        let topic = link.decisions_topic.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kafka-decisions".into())
                .spawn(move || read_decisions(&consumer, &topic, &agent_id, &stop, apply))
                .map_err(|e| SinkError::Task(e.to_string()))?
        };
        Ok(DecisionSubscriber {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops reading.
    pub fn close(&mut self) -> DecisionCounts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for DecisionSubscriber {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_decisions(
    consumer: &BaseConsumer,
    topic: &str,
    agent_id: &str,
    stop: &AtomicBool,
    mut apply: impl FnMut(&[u8]) -> Result<String, Rejected>,
) -> DecisionCounts {
    let mut counts = DecisionCounts::default();
    // The topic may not exist before the engine's first decision.
    let partition = loop {
        if stop.load(Ordering::Relaxed) {
            return counts;
        }
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(1)) {
            Ok(m) => match m.topics().first().map(|t| t.partitions().len()) {
                Some(n) if n > 0 => {
                    break partition_for(agent_id.as_bytes(), i32::try_from(n).unwrap_or(1));
                }
                _ => std::thread::sleep(Duration::from_millis(500)),
            },
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let mut assignment = TopicPartitionList::new();
    if let Err(e) = assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .and_then(|()| consumer.assign(&assignment))
    {
        tracing::error!(
            topic,
            partition,
            error = %e,
            "cannot read decisions"
        );
        return counts;
    }
    while !stop.load(Ordering::Relaxed) {
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading decisions");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let offset = message.offset();
        match apply(message.payload().unwrap_or_default()) {
            Ok(id) => {
                counts.applied += 1;
                tracing::info!(decision_id = %id, "applied a decision");
            }
            Err(Rejected::OtherAgent { .. }) => counts.other_agents += 1,
            Err(e) => {
                counts.ignored += 1;
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    error = %e,
                    "ignored a decision"
                );
            }
        }
    }
    counts
}
