//! What both binaries, `toolgate` and `toolgate-sink`, do at the edge of the process,
//! written once: replacing a file so that a reader or a crash sees the old content or
//! the new, never half ([`fs`]), reading the system's randomness ([`random`]), and
//! taking SIGINT, SIGTERM and SIGHUP in one thread ([`signals`]), where logs go
//! ([`logging`]), and how Kafka clients are configured ([`kafka`]).
#![deny(missing_docs)]

pub mod fs;
pub mod kafka;
pub mod logging;
pub mod random;
pub mod signals;
