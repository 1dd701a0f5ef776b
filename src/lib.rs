//! The `toolgate` command and the parts of the engine that are not detection: the
//! command line, offline replay in event-time order, renderings of findings for SIEMs,
//! the streaming engine, the outputs and the demo fleet.
//!
//! Detection logic lives in `toolgate-detectors`, wire types in `toolgate-protocol`,
//! sources in `toolgate-ingest`; this crate wires them to files, Kafka and SIEMs.
#![deny(missing_docs)]

pub mod barrier;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod detector_files;
pub mod engine;
pub mod event_time;
pub mod outputs;
pub mod process;
pub mod replay;
