//! The engine's end of the OTLP/HTTP receiver: the events it makes from tool spans are
//! redacted as a sink would redact them, then published to the events topic keyed by
//! agent, like a sink's. A request is answered only after the broker acknowledged every
//! event (or refused one, and the exporter is told to retry), so the engine's workers
//! see OTLP events exactly as sink events: partitioned, checkpointed, replayable.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use toolgate_detectors::secrets::Redactor;
use toolgate_ingest::otlp::receiver::Publish;
use toolgate_protocol::Event;
use toolgate_protocol::partition::PARTITIONER;

/// How long one request's events may take to be acknowledged.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Acks {
    failures: Mutex<Vec<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut f) = self.failures.lock()
        {
            f.push(e.to_string());
        }
    }
}

/// Publishes the receiver's events to the events topic.
pub struct EventsPublisher {
    producer: BaseProducer<Acks>,
    topic: String,
    redactor: Option<Redactor>,
}

impl EventsPublisher {
    /// A producer for `topic` on `brokers`, with the config's client properties.
    pub fn new(
        brokers: &str,
        properties: &[(String, String)],
        topic: &str,
        redactor: Option<Redactor>,
    ) -> Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("partitioner", PARTITIONER)
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", ACK_TIMEOUT.as_millis().to_string());
        for (k, v) in properties {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(Acks::default())
            .context("creating the OTLP receiver's producer")?;
        Ok(EventsPublisher {
            producer,
            topic: topic.to_string(),
            redactor,
        })
    }
}

impl Publish for EventsPublisher {
    fn publish(&mut self, events: &[Event]) -> Result<(), String> {
        if let Ok(mut f) = self.producer.context().failures.lock() {
            f.clear();
        }
        for event in events {
            let payload = match &self.redactor {
                Some(r) => {
                    let mut copy = event.clone();
                    r.redact_event(&mut copy);
                    copy.to_json()
                }
                None => event.to_json(),
            };
            let mut record = BaseRecord::to(&self.topic)
                .key(event.agent_id.as_str())
                .payload(payload.as_str());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e.to_string()),
                }
            }
        }
        self.producer
            .flush(ACK_TIMEOUT)
            .map_err(|e| format!("waiting for the broker: {e}"))?;
        let failures = self
            .producer
            .context()
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        match failures.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "{} of {} events not acknowledged: {first}",
                failures.len(),
                events.len()
            )),
        }
    }
}
