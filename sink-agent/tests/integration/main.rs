//! The sink end to end, one test binary: the stdio and HTTP proxies, real MCP peers,
//! and the Kafka transport against the embedded broker and tansu.

mod common;
#[path = "../../../tests/support/tansu.rs"]
mod tansu_support;

mod http;
mod kafka;
mod mcp_peers;
mod stdio;
mod tansu;
