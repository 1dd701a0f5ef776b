//! Everything the engine writes to Kafka (findings, decisions, dead letters) goes
//! through one idempotent producer. librdkafka retries a record until the broker takes
//! it (`message.timeout.ms = 0`), so only a record the broker can never take (too
//! large, not authorized) fails; those are appended to a dead-letter file under the
//! data directory rather than lost. [`Outbox::settle`] is the barrier a checkpoint
//! waits on before it commits offsets.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use toolgate_edge::kafka;

/// A record the broker refused for good.
struct Undeliverable {
    topic: String,
    key: Vec<u8>,
    payload: Vec<u8>,
    error: String,
}

#[derive(Default)]
struct OutboxContext {
    delivered: AtomicU64,
    undeliverable: Mutex<Vec<Undeliverable>>,
}

impl ClientContext for OutboxContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            tracing::warn!(reason, "kafka producer");
        }
    }
}

impl ProducerContext for OutboxContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                if let Ok(mut u) = self.undeliverable.lock() {
                    u.push(Undeliverable {
                        topic: m.topic().to_string(),
                        key: m.key().unwrap_or_default().to_vec(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        error: e.to_string(),
                    });
                }
            }
        }
    }
}

/// The engine's producer.
pub struct Outbox {
    producer: ThreadedProducer<OutboxContext>,
    dead_letter_file: PathBuf,
    undeliverable: AtomicU64,
}

impl Outbox {
    /// Connects to `brokers`; `properties` (from `[kafka.properties]`) go last.
    pub fn new(
        brokers: &str,
        properties: &[(String, String)],
        dead_letter_file: PathBuf,
    ) -> Result<Self> {
        let settings = [
            ("client.id", "toolgate-engine"),
            // A verdict is on an agent's critical path: send at once.
            ("linger.ms", "1"),
            ("message.timeout.ms", "0"),
        ];
        let config = kafka::producer(brokers, settings, properties.iter().map(|(k, v)| (k, v)));
        let producer = config
            .create_with_context(OutboxContext::default())
            .context("creating the Kafka producer")?;
        Ok(Outbox {
            producer,
            dead_letter_file,
            undeliverable: AtomicU64::new(0),
        })
    }

    /// Queues one record; waits while librdkafka's queue is full. A record the client
    /// refuses outright (over `message.max.bytes`) goes to the dead-letter file.
    pub fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<&[(&str, String)]>,
    ) {
        let headers = headers.map(|hs| {
            hs.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
                acc.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                })
            })
        });
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    if let Ok(mut u) = self.producer.context().undeliverable.lock() {
                        u.push(Undeliverable {
                            topic: topic.to_string(),
                            key: key.to_vec(),
                            payload: payload.to_vec(),
                            error: e.to_string(),
                        });
                    }
                    return;
                }
            }
        }
    }

    /// Waits until every record queued so far was acknowledged by the broker (or
    /// refused for good and written to the dead-letter file). An error means the
    /// broker did not acknowledge in `timeout`: nothing may be committed yet.
    pub fn settle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // librdkafka's own flush sleeps in 100 ms steps; a verdict-sized wait needs finer.
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                bail!(
                    "{} records not acknowledged by the broker after {timeout:?}",
                    self.producer.in_flight_count()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.write_undeliverable()
    }

    fn write_undeliverable(&self) -> Result<()> {
        let failed: Vec<Undeliverable> = match self.producer.context().undeliverable.lock() {
            Ok(mut u) => std::mem::take(&mut *u),
            Err(_) => bail!("delivery bookkeeping is poisoned"),
        };
        if failed.is_empty() {
            return Ok(());
        }
        let path = &self.dead_letter_file;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        for u in &failed {
            tracing::error!(
                topic = %u.topic,
                error = %u.error,
                kept_in = %path.display(),
                "the broker refused a record for good"
            );
            let line = serde_json::json!({
                "topic": u.topic,
                "key": String::from_utf8_lossy(&u.key),
                "error": u.error,
                "payload_base64": B64.encode(&u.payload),
            });
            writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        self.undeliverable
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Records acknowledged by the broker so far.
    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    /// Records the broker refused for good (kept in the dead-letter file).
    pub fn undeliverable(&self) -> u64 {
        self.undeliverable.load(Ordering::Relaxed)
    }
}
