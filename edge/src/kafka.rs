//! How every Kafka client of toolgate is configured (the engine's consumer group and
//! its producers, the OTLP receiver's producer, the sink's producer and decision
//! reader): the brokers, the client's own settings, then the operator's
//! `[kafka.properties]` (with `properties_env` resolved) on top, so TLS, SASL and any
//! tuning reach every client and can override ours.

use rdkafka::ClientConfig;
use toolgate_protocol::partition::PARTITIONER;

/// What every producer of toolgate topics sets: keys land on the partition the sinks
/// compute for their agent ([`PARTITIONER`]), and retries neither duplicate nor
/// reorder records.
pub const PRODUCER: [(&str, &str); 2] =
    [("partitioner", PARTITIONER), ("enable.idempotence", "true")];

/// A client of `brokers` with `settings`, then `properties` on top.
pub fn client<'a>(
    brokers: &str,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (k, v) in settings {
        config.set(k, v);
    }
    for (k, v) in properties {
        config.set(k, v);
    }
    config
}

/// A producer of toolgate topics: [`PRODUCER`], then `settings`, then `properties`.
pub fn producer<'a>(
    brokers: &str,
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    client(brokers, PRODUCER.into_iter().chain(settings), properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_operators_properties_win_over_the_clients_own_settings() {
        let properties = BTreeMap::from([
            ("linger.ms".to_string(), "50".to_string()),
            ("security.protocol".to_string(), "ssl".to_string()),
        ]);
        let config = client(
            "b:9092",
            PRODUCER.into_iter().chain([("linger.ms", "1")]),
            &properties,
        );
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("partitioner"), Some(PARTITIONER));
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("security.protocol"), Some("ssl"));
    }
}
