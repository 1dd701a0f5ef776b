//! The embedded broker: librdkafka's mock cluster, a Kafka-protocol broker in memory on
//! 127.0.0.1, for running on one machine without Kafka. The mock cluster is not
//! `Send`, so it lives on its own thread for as long as the handle does.

use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use toolgate_protocol::config::TopicsConfig;

/// A running embedded broker; dropping it stops the broker.
pub struct EmbeddedBroker {
    bootstrap: String,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts one broker with the toolgate topics, `partitions` partitions each.
    pub fn start(topics: &TopicsConfig, partitions: i32) -> Result<Self> {
        let names = [
            topics.events.clone(),
            topics.decisions.clone(),
            topics.findings.clone(),
            topics.dlq.clone(),
        ];
        let (ready_tx, ready_rx) = channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::<DefaultProducerContext>::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for name in &names {
                    if let Err(e) = cluster.create_topic(name, partitions, 1) {
                        let _ = ready_tx.send(Err(format!("creating topic {name}: {e}")));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Until the handle is dropped (the sender goes) or stops it.
                let _ = stop_rx.recv();
            })
            .context("starting the embedded broker thread")?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow!("the embedded broker thread ended before it was ready"))?
            .map_err(|e| anyhow!("starting the embedded broker: {e}"))?;
        Ok(EmbeddedBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bootstrap address sinks and the engine connect to.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
