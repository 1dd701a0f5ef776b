//! Where the engine's events come from, as two seams with one registry each:
//!
//! - **inputs** ([`Input`], [`INPUTS`]): what a driver reads, record by record in
//!   arrival order, each at a position it can commit: `kafka` (a member of the
//!   consumer group on the events topic; `toolgate run`) and `jsonl` (files, a
//!   directory or stdin; `toolgate analyze`). Records arrive undecoded and every
//!   input's are decoded by the same code (`RawRecord::decode`), so a record is an
//!   event or a dead letter alike from either.
//! - **receivers** ([`Receiver`], [`RECEIVERS`]): what takes events from outside the
//!   fleet's sinks and publishes them to the events topic, keyed by agent, so that the
//!   stream reads them exactly as the sinks' events: partitioned, checkpointed,
//!   replayable (`otlp`, OpenTelemetry traces). A receiver is not read by a driver
//!   directly: acknowledging a sender before its events are durable would lose them in
//!   a crash.
//!
//! A new kind is its module, one line in its registry, and its config section.

pub mod jsonl;
pub mod kafka;
pub mod otlp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use toolgate_ingest::IngestError;
use toolgate_ingest::kafka::{PartitionOwner, RawRecord};
use toolgate_protocol::config::Config;

use crate::Counters;

/// What an input had when asked.
#[derive(Debug)]
pub enum Next {
    /// A record, undecoded, at its position.
    Record(RawRecord),
    /// Nothing arrived in time; more may come.
    Idle,
    /// The input ended: nothing more will come.
    Ended,
}

/// A stream of records a driver reads in arrival order.
pub trait Input: Send {
    /// Its kind, as [`INPUTS`] names it.
    fn kind(&self) -> &'static str;

    /// The next record, waiting at most `timeout` for one. An error is the input's
    /// (a broker down, an unreadable file); whether reading can go on after it is
    /// the input's to say by what it returns next.
    fn next(&mut self, timeout: Duration) -> Result<Next, IngestError>;

    /// What a record at `partition` came from (a topic, a file), for dead letters.
    fn origin(&self, partition: i32) -> &str;

    /// Everything before these positions (partition, next offset) is processed and
    /// its state durable: the input may forget it.
    fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), IngestError>;

    /// Records the input passed over as holding nothing (blank lines).
    fn skipped(&self) -> u64 {
        0
    }
}

/// What opening an input needs besides the config.
pub struct InputContext<'a> {
    /// The engine's config: each input reads its own section.
    pub config: &'a Config,
    /// Where to read, when the command line names it (a file, a directory, `-`).
    pub location: Option<&'a str>,
    /// Bootstrap brokers, for an input that reads Kafka.
    pub brokers: &'a str,
    /// `[kafka.properties]`, for an input that reads Kafka.
    pub properties: &'a [(String, String)],
    /// Who owns the partitions an input assigns and revokes (the stream's
    /// coordinator); an input of one partition that never moves needs none.
    pub owner: Option<Arc<dyn PartitionOwner>>,
}

/// Opens an input.
pub type Open = fn(&InputContext<'_>) -> Result<Box<dyn Input>>;

/// The registry of inputs, by name.
pub const INPUTS: &[(&str, Open)] = &[("kafka", kafka::open), ("jsonl", jsonl::open)];

/// Opens the input `kind` names.
pub fn open_input(kind: &str, context: &InputContext<'_>) -> Result<Box<dyn Input>> {
    let (_, open) = INPUTS
        .iter()
        .find(|(name, _)| *name == kind)
        .ok_or_else(|| anyhow!("no input of kind {kind:?}"))?;
    open(context).with_context(|| format!("opening the {kind} input"))
}

/// A running receiver; it stops when dropped.
pub trait Receiver: Send {
    /// Its kind, as [`RECEIVERS`] names it.
    fn kind(&self) -> &'static str;

    /// Where it listens, for a receiver that listens.
    fn local_addr(&self) -> Option<SocketAddr>;
}

/// What starting a receiver needs besides the config.
pub struct ReceiverContext<'a> {
    /// The engine's config: each receiver reads its own section.
    pub config: &'a Config,
    /// Bootstrap brokers of the events topic.
    pub brokers: &'a str,
    /// `[kafka.properties]`, for the receiver's producer.
    pub properties: &'a [(String, String)],
    /// The engine's counters, where receivers count what they did.
    pub counters: &'a Counters,
}

/// Starts a receiver when its config section turns it on; `None` otherwise.
pub type Start = fn(&ReceiverContext<'_>) -> Result<Option<Box<dyn Receiver>>>;

/// The registry of receivers, by name.
pub const RECEIVERS: &[(&str, Start)] = &[("otlp", otlp::start)];

/// Starts every receiver the config turns on.
pub fn start_receivers(context: &ReceiverContext<'_>) -> Result<Vec<Box<dyn Receiver>>> {
    let mut running = Vec::new();
    for (kind, start) in RECEIVERS {
        if let Some(receiver) =
            start(context).with_context(|| format!("starting the {kind} receiver"))?
        {
            running.push(receiver);
        }
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use toolgate_ingest::kafka::{Commit, Polled};
    use toolgate_protocol::DecodeError;

    use super::*;

    struct NoPartitions;

    impl PartitionOwner for NoPartitions {
        fn assigned(&self, partitions: &[i32]) -> Vec<Option<i64>> {
            vec![None; partitions.len()]
        }

        fn revoked(&self, _partitions: &[i32], _commit: Commit<'_>) {}
    }

    const EVENT: &str = r#"{"schema":"toolgate.event.v1","kind":"tool_call","event_id":"e1","time":"2026-01-01T00:00:00Z","agent_id":"a","session_id":"s","server":"srv","call_id":"c1","tool":"t","arguments":{}}"#;

    #[test]
    fn every_registered_input_opens_under_its_own_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("events.jsonl");
        std::fs::write(&file, format!("{EVENT}\n")).expect("write");
        let config = Config::default();
        for (name, open) in INPUTS {
            let context = InputContext {
                config: &config,
                location: file.to_str(),
                // Joining a group does not wait for a broker.
                brokers: "127.0.0.1:1",
                properties: &[],
                owner: Some(Arc::new(NoPartitions)),
            };
            let input = open(&context).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(input.kind(), *name);
        }
        let context = InputContext {
            config: &config,
            location: None,
            brokers: "",
            properties: &[],
            owner: None,
        };
        let err = open_input("nats", &context).err().expect("unknown kind");
        assert!(err.to_string().contains("\"nats\""), "{err}");
    }

    #[test]
    fn the_jsonl_input_numbers_files_and_lines_and_decodes_as_kafka_records_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.jsonl"),
            format!("{EVENT}\n\n{{\"schema\":1}}\n"),
        )
        .expect("write");
        std::fs::write(
            dir.path().join("b.jsonl"),
            format!("{EVENT}\r\n{}\n", "x".repeat(300)),
        )
        .expect("write");
        let mut config = Config::default();
        config.limits.max_event_bytes = 256;
        let context = InputContext {
            config: &config,
            location: dir.path().to_str(),
            brokers: "",
            properties: &[],
            owner: None,
        };
        let mut input = open_input("jsonl", &context).expect("open");
        let mut seen = Vec::new();
        loop {
            let record = match input.next(Duration::ZERO).expect("read") {
                Next::Record(record) => record,
                Next::Idle => panic!("a file is never idle"),
                Next::Ended => break,
            };
            let (partition, offset) = (record.partition, record.offset);
            let origin = input.origin(partition).to_string();
            let outcome = match record.decode(&origin, 256, 256) {
                Polled::Event { .. } => "event".to_string(),
                Polled::Rejected(r) => match r.error {
                    DecodeError::TooLarge { size, .. } => {
                        assert_eq!((r.raw.len(), r.raw_len), (256, 300));
                        format!("too large: {size}")
                    }
                    e => e.kind().to_string(),
                },
            };
            let file = origin.rsplit('/').next().unwrap_or_default().to_string();
            seen.push((file, partition, offset, outcome));
        }
        let at = |f: &str, p, o, what: &str| (f.to_string(), p, o, what.to_string());
        let schema_error = match toolgate_protocol::Event::decode(br#"{"schema":1}"#) {
            Err(e) => e.kind().to_string(),
            Ok(_) => panic!("a bad schema decodes"),
        };
        assert_eq!(
            seen,
            vec![
                at("a.jsonl", 0, 1, "event"),
                at("a.jsonl", 0, 3, &schema_error),
                at("b.jsonl", 1, 1, "event"),
                at("b.jsonl", 1, 2, "too large: 300"),
            ]
        );
        assert_eq!(input.skipped(), 1, "the blank line");
    }
}
