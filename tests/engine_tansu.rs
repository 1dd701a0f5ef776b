//! The engine's Kafka scenarios against a real Kafka-compatible broker (tansu), which
//! `.ci/run` installs: findings, decisions and dead letters, and a consumer group of
//! two engine processes of which one is killed with SIGKILL mid-stream.

mod common;
#[path = "support/tansu.rs"]
mod tansu_support;

use common::kafka::*;
use tansu_support::{TansuProcess, free_port, tansu_binary};
use toolgate_protocol::config::TopicsConfig;

/// A broker with the toolgate topics; its bootstrap address.
fn tansu() -> Option<(TansuProcess, String)> {
    let binary = tansu_binary()?;
    let port = free_port();
    let topics = TopicsConfig::default();
    let names = [
        &topics.events,
        &topics.findings,
        &topics.decisions,
        &topics.dlq,
    ];
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let broker = TansuProcess::start(&binary, port, port, &names, PARTITIONS);
    Some((broker, format!("127.0.0.1:{port}")))
}

#[test]
fn tansu_events_become_findings_signed_decisions_and_dead_letters() {
    if let Some((_broker, brokers)) = tansu() {
        events_become_findings_decisions_and_dead_letters(&brokers);
    }
}

#[test]
fn tansu_two_engines_share_the_group_and_a_kill_9_loses_nothing() {
    if let Some((_broker, brokers)) = tansu() {
        two_engines_one_killed_lose_nothing(&brokers);
    }
}
