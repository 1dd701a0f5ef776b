//! The engine's Kafka source: one member of a consumer group on the events topic.
//!
//! Records come out as fetched ([`RawRecord`]) and are decoded by whoever owns their
//! partition, as the JSONL source decodes a line: an [`Event`], or a [`KafkaRejected`]
//! carrying the error, the original bytes and where they came from, for the
//! dead-letter topic. Offsets are never committed automatically; the caller
//! commits what it has finished with [`GroupConsumer::commit`].
//!
//! Rebalances go through a [`PartitionOwner`]: before partitions are given up it
//! finishes their work and commits, and before new ones are fetched it says where
//! each starts (its checkpoint's offset), so state and position move together.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use toolgate_protocol::{DecodeError, Event};

use crate::IngestError;

/// A dead letter keeps at most this much of the original record, so it stays under
/// the default message size limit of every broker (1 MiB) with its headers.
pub const DEAD_LETTER_MAX_BYTES: usize = 512 * 1024;

/// Commits, synchronously, the next offset to read of each partition given.
pub type Commit<'a> = &'a dyn Fn(&[(i32, i64)]) -> Result<(), IngestError>;

/// The engine side of a rebalance. Both calls run inside [`GroupConsumer::poll`], on
/// the polling thread.
pub trait PartitionOwner: Send + Sync {
    /// `partitions` are now this member's. Returns, in the same order, where each
    /// starts: `Some(offset)` (from a checkpoint), or `None` for the group's committed
    /// offset (else the earliest).
    fn assigned(&self, partitions: &[i32]) -> Vec<Option<i64>>;

    /// `partitions` are being taken away: another member may start on them as soon as
    /// this returns, so their work must be finished, checkpointed and committed
    /// (through `commit`) before it does.
    fn revoked(&self, partitions: &[i32], commit: Commit<'_>);

    /// The client's latest count of records not yet read, per held partition.
    fn lag(&self, _lags: &[(i32, i64)]) {}
}

/// Where a consumer connects and what it reads.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Bootstrap brokers, `host:port,…`.
    pub brokers: String,
    /// The consumer group.
    pub group_id: String,
    /// The events topic.
    pub topic: String,
    /// Extra librdkafka properties, applied last (they override the defaults here).
    pub properties: Vec<(String, String)>,
}

/// The consumer's `receive.message.max.bytes`: librdkafka's largest.
const RECEIVE_MESSAGE_MAX_BYTES: &str = "2147483647";

/// A record that did not decode, with everything the dead-letter topic keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaRejected {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if it had one.
    pub key: Option<Vec<u8>>,
    /// Why it was rejected.
    pub error: DecodeError,
    /// The original bytes, up to [`DEAD_LETTER_MAX_BYTES`] (see `raw_len`).
    pub raw: Vec<u8>,
    /// The original length in bytes.
    pub raw_len: usize,
    /// SHA-256 of the bytes read, in hex: identifies a truncated record (a record from
    /// Kafka is read whole; a JSONL line over the limit is cut at it).
    pub digest: String,
}

impl KafkaRejected {
    /// The headers a dead-letter record carries: the error and the source position.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("toolgate.error", self.error.to_string()),
            ("toolgate.error.kind", self.error.kind().to_string()),
            ("toolgate.source.topic", self.topic.clone()),
            ("toolgate.source.partition", self.partition.to_string()),
            ("toolgate.source.offset", self.offset.to_string()),
            ("toolgate.source.bytes", self.raw_len.to_string()),
            ("toolgate.source.sha256", self.digest.clone()),
        ];
        if let Some(field) = self.error.field() {
            h.push(("toolgate.error.field", field.to_string()));
        }
        if self.raw.len() < self.raw_len {
            h.push(("toolgate.source.truncated", "true".to_string()));
        }
        h
    }
}

/// One record as fetched from the events topic, not yet decoded.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key, if it had one.
    pub key: Option<Vec<u8>>,
    /// Its bytes: all of them, or the first `max_event_bytes + 1` of a record the
    /// input would not hold whole (see `length`).
    pub payload: Vec<u8>,
    /// Its size in bytes, whole.
    pub length: usize,
}

impl RawRecord {
    /// Decodes it, the one decoding every input shares: an [`Event`], or the rejection
    /// of a record of `origin` (its topic, or its file) keeping the first `keep` of its
    /// bytes with its whole size and digest.
    pub fn decode(self, origin: &str, max_event_bytes: usize, keep: usize) -> Polled {
        let decoded = if self.length > self.payload.len() {
            Err(DecodeError::TooLarge {
                size: self.length,
                limit: max_event_bytes,
            })
        } else {
            Event::decode_with_limit(&self.payload, max_event_bytes)
        };
        match decoded {
            Ok(event) => Polled::Event {
                partition: self.partition,
                offset: self.offset,
                event: Box::new(event),
            },
            Err(error) => {
                let digest =
                    toolgate_protocol::fingerprint::hex(&Sha256::digest(&self.payload)[..]);
                let mut raw = self.payload;
                raw.truncate(keep);
                Polled::Rejected(Box::new(KafkaRejected {
                    topic: origin.to_string(),
                    partition: self.partition,
                    offset: self.offset,
                    key: self.key,
                    error,
                    raw,
                    raw_len: self.length,
                    digest,
                }))
            }
        }
    }
}

/// One decoded record.
#[derive(Debug)]
pub enum Polled {
    /// A decoded event.
    Event {
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// The event.
        event: Box<Event>,
    },
    /// A record that did not decode.
    Rejected(Box<KafkaRejected>),
}

impl Polled {
    /// The record's partition and offset.
    pub fn position(&self) -> (i32, i64) {
        match self {
            Polled::Event {
                partition, offset, ..
            } => (*partition, *offset),
            Polled::Rejected(r) => (r.partition, r.offset),
        }
    }
}

struct GroupContext {
    owner: Arc<dyn PartitionOwner>,
    topic: String,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        // librdkafka reports -1 for partitions it does not consume and for its own
        // internal partition (-1).
        let lags: Vec<(i32, i64)> = topic
            .partitions
            .iter()
            .filter(|(p, s)| **p >= 0 && s.consumer_lag >= 0)
            .map(|(p, s)| (*p, s.consumer_lag))
            .collect();
        self.owner.lag(&lags);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let starts = self.owner.assigned(&partitions);
                for (p, start) in partitions.iter().zip(starts) {
                    if let Some(offset) = start {
                        let _ = tpl.set_partition_offset(&self.topic, *p, Offset::Offset(offset));
                    }
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            _ => {
                let commit =
                    |offsets: &[(i32, i64)]| commit_offsets(consumer, &self.topic, offsets);
                self.owner.revoked(&partitions, &commit);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
        };
        if let Err(e) = outcome {
            tracing::error!(topic = %self.topic, error = %e, "rebalance");
        }
    }
}

fn commit_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), IngestError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, next) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*next))
            .map_err(|e| kafka_error("committing offsets", e))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| kafka_error("committing offsets", e))
}

fn kafka_error(what: &str, e: KafkaError) -> IngestError {
    IngestError::Kafka {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A consumer group member on the events topic.
pub struct GroupConsumer {
    consumer: BaseConsumer<GroupContext>,
    topic: String,
}

impl GroupConsumer {
    /// Joins the group and subscribes; partitions arrive through `owner` during
    /// [`GroupConsumer::poll`].
    pub fn join(
        settings: &GroupSettings,
        owner: Arc<dyn PartitionOwner>,
    ) -> Result<Self, IngestError> {
        let own = [
            ("group.id", settings.group_id.as_str()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            // A fetch waits at most this long for data; it bounds how stale a quiet
            // partition's newest record can be (verdicts wait on it).
            ("fetch.wait.max.ms", "10"),
            // When the engine falls behind, the prefetched queue passes its threshold and
            // librdkafka postpones the partition's next fetch, by a whole second by
            // default: consumption stalled that long once the queue drained, and a held
            // call's event could wait as long. Checking again after 10 ms costs a wake-up.
            ("fetch.queue.backoff.ms", "10"),
            // Lag per partition comes with the client's statistics.
            ("statistics.interval.ms", "5000"),
            // A fetch returns a first batch larger than `fetch.max.bytes` whole, so
            // one record can always make progress, but a response over this limit is
            // a protocol error: the client drops the connection and fetches the same
            // record again, forever, and every record after it waits unseen (the
            // default is 100 MB). At librdkafka's ceiling any record a broker holds
            // arrives, and an over-limit one is dead-lettered (truncated, with its
            // size and digest) instead. Ordinary fetches stay `fetch.max.bytes`.
            ("receive.message.max.bytes", RECEIVE_MESSAGE_MAX_BYTES),
        ];
        let config = toolgate_edge::kafka::client(
            &settings.brokers,
            own,
            settings.properties.iter().map(|(k, v)| (k, v)),
        );
        let context = GroupContext {
            owner,
            topic: settings.topic.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|e| kafka_error("creating the consumer", e))?;
        consumer
            .subscribe(&[&settings.topic])
            .map_err(|e| kafka_error("subscribing", e))?;
        Ok(GroupConsumer {
            consumer,
            topic: settings.topic.clone(),
        })
    }

    /// The next record, as fetched, or `None` if none came within `timeout`.
    /// Rebalance callbacks run in here. Errors are the client's (a broker down, a
    /// failed fetch); the consumer keeps going after them. Decoding is left to the
    /// caller ([`RawRecord::decode`]), so it can run on the thread that owns the
    /// record's partition.
    pub fn poll(&self, timeout: Duration) -> Result<Option<RawRecord>, IngestError> {
        let message = match self.consumer.poll(timeout) {
            None => return Ok(None),
            Some(Err(e)) => return Err(kafka_error("polling", e)),
            Some(Ok(m)) => m,
        };
        let payload = message.payload().unwrap_or_default().to_vec();
        Ok(Some(RawRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            length: payload.len(),
            payload,
        }))
    }

    /// The topic it consumes.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Commits, synchronously, the next offset to read of each partition.
    pub fn commit(&self, offsets: &[(i32, i64)]) -> Result<(), IngestError> {
        commit_offsets(&self.consumer, &self.topic, offsets)
    }
}
