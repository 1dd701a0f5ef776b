//! The OTLP/HTTP receiver (`[otlp] listen`): the events it makes from tool spans are
//! redacted as a sink would redact them, then published to the events topic keyed by
//! agent, like a sink's. A request is answered only after the broker acknowledged every
//! event, so the engine's workers see OTLP events exactly as sink events: partitioned,
//! checkpointed, replayable. An event that can never be published (over
//! `[limits] max_event_bytes` once redacted, or refused by the client or the broker for
//! its size) is reported as refused, and its span rejected in `partial_success`; any
//! other failure tells the exporter to retry the request.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use toolgate_detectors::secrets::Redactor;
use toolgate_edge::kafka;
use toolgate_ingest::otlp::genai::MappingOptions;
use toolgate_ingest::otlp::receiver::{
    DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT, OtlpReceiver, Publish, PublishError,
    ReceiverOptions, Refusal,
};
use toolgate_protocol::Event;

use super::{Receiver, ReceiverContext};

/// Starts the receiver when `[otlp] listen` is set.
pub fn start(context: &ReceiverContext<'_>) -> Result<Option<Box<dyn Receiver>>> {
    let config = context.config;
    let otlp = &config.otlp;
    let Some(listen) = &otlp.listen else {
        return Ok(None);
    };
    let token = match (&otlp.token, &otlp.token_env) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(var)) => Some(read_token(var)?),
        (None, None) => None,
    };
    if token.is_none() && !is_loopback(listen) {
        anyhow::bail!(
            "[otlp] listen = {listen:?} is reachable from the network, and without a token anyone who reaches it can write events in any agent's name: set [otlp] token_env, or listen on 127.0.0.1"
        );
    }
    let publisher = EventsPublisher::new(
        context.brokers,
        context.properties,
        &config.kafka.topics.events,
        crate::configured_redactor(config)?,
        config.limits.max_event_bytes,
    )?;
    let receiver = OtlpReceiver::start(
        ReceiverOptions {
            listen: listen.clone(),
            max_body_bytes: otlp.max_request_bytes,
            // What the consumer accepts: a larger event is rejected up front.
            max_event_bytes: config.limits.max_event_bytes,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            mapping: MappingOptions {
                default_server: otlp.default_server.clone(),
            },
            token,
        },
        Box::new(publisher),
        std::sync::Arc::clone(&context.counters.otlp),
    )?;
    let addr = receiver.local_addr();
    tracing::info!(%addr, "OTLP/HTTP traces on http://{addr}/v1/traces");
    Ok(Some(Box::new(receiver)))
}

/// The token in the environment variable `var`, without surrounding whitespace (a
/// trailing newline from a secrets file would refuse every exporter).
fn read_token(var: &str) -> Result<String> {
    let value = std::env::var_os(var)
        .with_context(|| format!("[otlp] token_env names {var}, which is not set"))?;
    let value = value
        .into_string()
        .map_err(|_| anyhow::anyhow!("[otlp] token_env: {var} is not UTF-8"))?;
    let token = value.trim();
    if token.is_empty() {
        anyhow::bail!("[otlp] token_env: {var} is empty");
    }
    Ok(token.to_string())
}

/// Whether `listen` (`host:port`) is only reachable from this host.
fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(mut addrs) => addrs.all(|a| a.ip().is_loopback()),
        Err(_) => false,
    }
}

impl Receiver for OtlpReceiver {
    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        Some(OtlpReceiver::local_addr(self))
    }
}

/// How long one request's events may take to be acknowledged.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Acks {
    /// The events of the batch being published that were not acknowledged, by index.
    failures: Mutex<Vec<(usize, KafkaError)>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((e, _)) = result
            && let Ok(mut f) = self.failures.lock()
        {
            f.push((index, e.clone()));
        }
    }
}

/// A client or broker answer that sending the same event again will not change.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidRecord)
    )
}

/// Publishes the receiver's events to the events topic.
pub struct EventsPublisher {
    producer: BaseProducer<Acks>,
    topic: String,
    redactor: Option<Redactor>,
    max_event_bytes: usize,
}

impl EventsPublisher {
    /// A producer for `topic` on `brokers`, with the config's client properties;
    /// events over `max_event_bytes` once redacted (what the engine's consumer
    /// accepts) are refused.
    pub fn new(
        brokers: &str,
        properties: &[(String, String)],
        topic: &str,
        redactor: Option<Redactor>,
        max_event_bytes: usize,
    ) -> Result<Self> {
        let timeout = ACK_TIMEOUT.as_millis().to_string();
        let settings = [("linger.ms", "2"), ("message.timeout.ms", timeout.as_str())];
        let config = kafka::producer(brokers, settings, properties.iter().map(|(k, v)| (k, v)));
        let producer = config
            .create_with_context(Acks::default())
            .context("creating the OTLP receiver's producer")?;
        Ok(EventsPublisher {
            producer,
            topic: topic.to_string(),
            redactor,
            max_event_bytes,
        })
    }
}

impl Publish for EventsPublisher {
    fn publish(&mut self, events: &[Event]) -> Result<(), PublishError> {
        if let Ok(mut f) = self.producer.context().failures.lock() {
            f.clear();
        }
        let mut refused = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let payload = match &self.redactor {
                Some(r) => {
                    let mut copy = event.clone();
                    r.redact_event(&mut copy);
                    copy.to_json()
                }
                None => event.to_json(),
            };
            // The engine's consumer would dead-letter it: refused here, where the
            // exporter is told.
            if payload.len() > self.max_event_bytes {
                refused.push(Refusal {
                    index,
                    reason: format!(
                        "the event is {} bytes once redacted, over the {}-byte limit",
                        payload.len(),
                        self.max_event_bytes
                    ),
                });
                continue;
            }
            let mut record = BaseRecord::with_opaque_to(&self.topic, index)
                .key(event.agent_id.as_str())
                .payload(payload.as_str());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) if permanent(&e) => {
                        refused.push(Refusal {
                            index,
                            reason: e.to_string(),
                        });
                        break;
                    }
                    Err((e, _)) => {
                        // What was queued still goes out: its reports must not be
                        // taken for the next batch's.
                        let _ = self.producer.flush(ACK_TIMEOUT);
                        return Err(PublishError::Unavailable(e.to_string()));
                    }
                }
            }
        }
        self.producer
            .flush(ACK_TIMEOUT)
            .map_err(|e| PublishError::Unavailable(format!("waiting for the broker: {e}")))?;
        let failures = self
            .producer
            .context()
            .failures
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        let (lasting, passing): (Vec<_>, Vec<_>) =
            failures.into_iter().partition(|(_, e)| permanent(e));
        if let Some((_, first)) = passing.first() {
            return Err(PublishError::Unavailable(format!(
                "{} of {} events not acknowledged: {first}",
                passing.len(),
                events.len()
            )));
        }
        refused.extend(lasting.into_iter().map(|(index, e)| Refusal {
            index,
            reason: format!("the broker refused it: {e}"),
        }));
        if refused.is_empty() {
            Ok(())
        } else {
            Err(PublishError::Refused(refused))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counters;

    #[test]
    fn issue_22_a_receiver_reachable_from_the_network_needs_a_token() {
        for (listen, loopback) in [
            ("127.0.0.1:4318", true),
            ("[::1]:4318", true),
            ("localhost:4318", true),
            ("0.0.0.0:4318", false),
            ("[::]:4318", false),
            ("not an address", false),
        ] {
            assert_eq!(is_loopback(listen), loopback, "{listen}");
        }
        let mut config = toolgate_protocol::config::Config::default();
        config.otlp.listen = Some("0.0.0.0:0".into());
        let counters = Counters::default();
        let context = ReceiverContext {
            config: &config,
            brokers: "127.0.0.1:1",
            properties: &[],
            counters: &counters,
        };
        let err = start(&context).err().expect("refused").to_string();
        assert!(
            err.contains("[otlp] listen = \"0.0.0.0:0\"") && err.contains("token_env"),
            "{err}"
        );
    }
}
