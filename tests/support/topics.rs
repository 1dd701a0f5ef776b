//! Reading a topic back from the beginning, for end-to-end tests against any broker.
//! Shared by the workspace's test crates (`#[path]`-included).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// Client properties (TLS, SASL) registered per bootstrap address with [`secure`].
static SECURITY: Mutex<BTreeMap<String, Vec<(String, String)>>> = Mutex::new(BTreeMap::new());

/// From now on, the helpers' clients of `brokers` set `properties` too: a broker that
/// requires TLS or SASL is read and written like any other.
#[allow(dead_code)]
pub fn secure(brokers: &str, properties: &[(String, String)]) {
    SECURITY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(brokers.to_string(), properties.to_vec());
}

/// The properties [`secure`] registered for `brokers` (rdkafka's own `config_map`
/// hides passwords, so a client config cannot be copied from it).
pub fn security(brokers: &str) -> Vec<(String, String)> {
    let security = SECURITY.lock().unwrap_or_else(PoisonError::into_inner);
    security.get(brokers).cloned().unwrap_or_default()
}

/// A client config for `brokers`, with the properties [`secure`] registered for it.
pub fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in security(brokers) {
        config.set(k, v);
    }
    config
}

/// One consumed record.
#[derive(Debug)]
pub struct Record {
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Record {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// Every record of `topic`'s `partitions`, per partition in offset order (waits until
/// `expected` arrived, or 20 s).
pub fn read_all(brokers: &str, topic: &str, partitions: i32, expected: usize) -> Vec<Record> {
    read_until(brokers, topic, partitions, |records| {
        records.len() >= expected
    })
}

/// Every record of `topic`'s `partitions`, per partition in offset order, once `done`
/// holds for what arrived and nothing more is waiting (or after 20 s). A count alone
/// races when records arrive in an order the test cannot know, as findings of
/// different detectors do.
pub fn read_until(
    brokers: &str,
    topic: &str,
    partitions: i32,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer = from_the_beginning(brokers, topic, partitions, false);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Record {
                partition: m.partition(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if done(&out) => break,
            None => {}
        }
    }
    out
}

/// Every record of `topic` up to its end now: for a topic whose writers have stopped,
/// read until each partition reports its end (no fixed wait for what will not come).
pub fn read_to_end(brokers: &str, topic: &str, partitions: i32) -> Vec<Record> {
    let consumer = from_the_beginning(brokers, topic, partitions, true);
    let mut out = Vec::new();
    let mut ended = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && ended.len() < partitions as usize {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Record {
                partition: m.partition(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: BTreeMap::new(),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    assert_eq!(
        ended.len(),
        partitions as usize,
        "{topic} did not reach its end"
    );
    out
}

/// A reader of every partition of `topic` from its first record; with `eof`, each
/// partition reports when it has reached its end.
fn from_the_beginning(brokers: &str, topic: &str, partitions: i32, eof: bool) -> BaseConsumer {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}
