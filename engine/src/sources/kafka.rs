//! The `kafka` input: a member of the consumer group `[kafka] group_id` on the events
//! topic, the stream's input. Partitions come and go with rebalances, through the
//! context's owner; offsets are committed only when the engine says its state is
//! durable.

use std::time::Duration;

use anyhow::{Result, anyhow};
use toolgate_ingest::IngestError;
use toolgate_ingest::kafka::{GroupConsumer, GroupSettings};

use super::{Input, InputContext, Next};

/// Joins the group; partitions arrive through `context.owner` while reading.
pub fn open(context: &InputContext<'_>) -> Result<Box<dyn Input>> {
    let config = context.config;
    let owner = context
        .owner
        .clone()
        .ok_or_else(|| anyhow!("the kafka input needs the owner of its partitions"))?;
    let settings = GroupSettings {
        brokers: context.brokers.to_string(),
        group_id: config.kafka.group_id.clone(),
        topic: config.kafka.topics.events.clone(),
        properties: context.properties.to_vec(),
    };
    Ok(Box::new(GroupConsumer::join(&settings, owner)?))
}

impl Input for GroupConsumer {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn next(&mut self, timeout: Duration) -> Result<Next, IngestError> {
        Ok(match self.poll(timeout)? {
            Some(record) => Next::Record(record),
            None => Next::Idle,
        })
    }

    fn origin(&self, _partition: i32) -> &str {
        self.topic()
    }

    fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), IngestError> {
        GroupConsumer::commit(self, positions)
    }
}
