//! The decisions topic read back and written to by hand: which blocks are in force,
//! and lifting one with a signed `allow` of the same scope. Sinks apply the most
//! specific decision that matches a call, the latest among equally specific ones, so
//! an `allow` of a block's exact scope, made after it, lifts it everywhere the block
//! reached, for the rest of its life. The record on the topic is the audit trail: who
//! lifted what, when and why.

use std::collections::BTreeSet;
use std::time::{Duration as WallDuration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::Config;
use toolgate_protocol::decision::{Decision, DecisionAction, DecisionSigner, DecisionVerifier};

/// What the topic holds, as far as it can be trusted.
#[derive(Debug, Default)]
pub struct DecisionLog {
    /// Decisions whose signature verifies, in the order read (per partition, in
    /// offset order: an agent's decisions in the order they were written).
    pub decisions: Vec<Decision>,
    /// Records that are not decisions or whose signature does not verify: the sinks
    /// ignore them too.
    pub ignored: usize,
}

impl DecisionLog {
    /// Reads `[kafka.topics] decisions` on `brokers` from its beginning to its end now,
    /// keeping what `verifier` accepts.
    pub fn read(config: &Config, brokers: &str, verifier: &DecisionVerifier) -> Result<Self> {
        let topic = &config.kafka.topics.decisions;
        let consumer: BaseConsumer = toolgate_edge::kafka::client(
            brokers,
            [
                ("group.id", "toolgate-decisions-cli"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
            ],
            &config.kafka.properties,
        )
        .create()
        .context("cannot create a Kafka consumer")?;
        let timeout = WallDuration::from_secs(15);
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .with_context(|| format!("cannot read the metadata of {topic} on {brokers}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut list = TopicPartitionList::new();
        let mut open = BTreeSet::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .with_context(|| format!("cannot read the offsets of {topic}/{p}"))?;
            if high > low {
                list.add_partition_offset(topic, p, Offset::Beginning)?;
                open.insert(p);
            }
        }
        let mut log = DecisionLog::default();
        if open.is_empty() {
            return Ok(log);
        }
        consumer.assign(&list)?;
        let deadline = Instant::now() + WallDuration::from_secs(60);
        while !open.is_empty() {
            if Instant::now() > deadline {
                bail!("{topic} was not read to its end within 60 s");
            }
            match consumer.poll(WallDuration::from_millis(200)) {
                Some(Ok(m)) => {
                    let decision =
                        serde_json::from_slice::<Decision>(m.payload().unwrap_or_default())
                            .ok()
                            .filter(|d| verifier.verify(d).is_ok());
                    match decision {
                        Some(d) => log.decisions.push(d),
                        None => log.ignored += 1,
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
                None => {}
            }
        }
        Ok(log)
    }

    /// The block decisions in force at `now`: not expired, and not lifted by an
    /// `allow` of the same scope made at or after them.
    pub fn in_force(&self, now: Timestamp) -> Vec<&Decision> {
        self.decisions
            .iter()
            .filter(|d| d.action == DecisionAction::Block)
            .filter(|d| d.expires_at.is_none_or(|e| e > now))
            .filter(|d| !self.lifted(d))
            .collect()
    }

    /// Whether an `allow` of `block`'s exact scope, made at or after it, lifts it.
    pub fn lifted(&self, block: &Decision) -> bool {
        self.decisions.iter().any(|a| {
            a.action == DecisionAction::Allow && a.scope == block.scope && a.time >= block.time
        })
    }
}

/// The signed `allow` that lifts `block` from `now` until the block would have
/// expired, naming `who` lifted it and `why`.
pub fn lift(
    signer: &DecisionSigner,
    block: &Decision,
    now: Timestamp,
    who: &str,
    why: &str,
) -> Decision {
    let mut allow = Decision {
        schema: Default::default(),
        decision_id: format!("lift-{}", block.decision_id),
        time: now.max(block.time),
        expires_at: block.expires_at,
        action: DecisionAction::Allow,
        scope: block.scope.clone(),
        reason: format!("lifted by {who}: {why}"),
        finding_ids: block.finding_ids.clone(),
        key_id: String::new(),
        signature: String::new(),
    };
    signer.sign(&mut allow);
    allow
}

/// Writes `decision` to the decisions topic on `brokers`, keyed by its agent as the
/// engine writes (so it lands on the partition that agent's sinks read), and waits
/// for the broker's acknowledgement.
pub fn publish(config: &Config, brokers: &str, decision: &Decision) -> Result<()> {
    let producer: BaseProducer =
        toolgate_edge::kafka::producer(brokers, [], &config.kafka.properties)
            .create()
            .context("cannot create a Kafka producer")?;
    let payload = serde_json::to_vec(decision)?;
    producer
        .send(
            BaseRecord::to(&config.kafka.topics.decisions)
                .key(decision.scope.agent_id.as_bytes())
                .payload(&payload),
        )
        .map_err(|(e, _)| e)
        .context("cannot queue the decision")?;
    producer
        .flush(WallDuration::from_secs(30))
        .context("the broker did not acknowledge the decision")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_protocol::decision::Scope;

    fn block(id: &str, secs: i64, expires: i64) -> Decision {
        Decision {
            schema: Default::default(),
            decision_id: id.into(),
            time: Timestamp::from_unix_nanos(secs * 1_000_000_000),
            expires_at: Some(Timestamp::from_unix_nanos(expires * 1_000_000_000)),
            action: DecisionAction::Block,
            scope: Scope {
                agent_id: "a".into(),
                session_id: Some("s".into()),
                server: Some("mail".into()),
                tool: Some("send".into()),
                call_id: None,
                destination: None,
            },
            reason: "r".into(),
            finding_ids: vec!["f".into()],
            key_id: String::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn issue_22_a_lift_of_the_same_scope_ends_a_block_and_expiry_ends_it_too() {
        let signer =
            DecisionSigner::from_seed_base64("k", &format!("{}=", "A".repeat(43))).expect("signer");
        let now = Timestamp::from_unix_nanos(150 * 1_000_000_000);
        let mut log = DecisionLog {
            decisions: vec![block("b1", 100, 3700), block("b2", 100, 120)],
            ignored: 0,
        };
        let ids = |log: &DecisionLog| -> Vec<String> {
            log.in_force(now)
                .iter()
                .map(|d| d.decision_id.clone())
                .collect()
        };
        assert_eq!(ids(&log), ["b1"], "b2 has expired");
        let allow = lift(&signer, &log.decisions[0], now, "alice", "false positive");
        assert_eq!(allow.scope, log.decisions[0].scope);
        assert_eq!(allow.expires_at, log.decisions[0].expires_at);
        assert_eq!(allow.reason, "lifted by alice: false positive");
        let mut verifier = DecisionVerifier::default();
        verifier.add_key("k", &signer.public_key_base64()).unwrap();
        assert!(verifier.verify(&allow).is_ok());
        log.decisions.push(allow);
        assert!(ids(&log).is_empty());
        // A later block of the same scope is not lifted by the earlier allow.
        log.decisions.push(block("b3", 200, 3700));
        assert_eq!(log.in_force(now).len(), 1);
    }
}
