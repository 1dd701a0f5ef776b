//! toolgate-sink, the per-agent sink: transparent MCP proxies (stdio and streamable
//! HTTP), local synchronous checks before a call is forwarded, the Kafka producer with
//! its disk spool, and the subscriber that applies signed engine decisions.
//!
//! It must start fast and stay small, so it never depends on Arrow or DataFusion.
//! Nothing is built yet; the proxy arrives with its own issue, and this crate stays
//! empty rather than hold placeholders.
