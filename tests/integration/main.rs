//! The `toolgate` binary and engine end to end, one test binary: each module was its
//! own binary once, and every one linked the whole SQL and Kafka stack.

#[path = "../support/certs.rs"]
mod certs;
mod common;
#[path = "../support/tansu.rs"]
mod tansu_support;

mod behaviour;
mod cli;
mod demo;
mod engine;
mod engine_tansu;
mod history;
mod http_outputs;
mod otlp;
mod siem;
