//! The `toolgate` command: the command line, its subcommands and the demo fleet.
//!
//! Detection logic lives in `toolgate-detectors`, wire types in `toolgate-protocol`,
//! sources in `toolgate-ingest`, and the runtime that drives them (the stream, replay,
//! outputs, history writers) in `toolgate-engine`; this crate is the front of them.
#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod demo;
pub mod process;
