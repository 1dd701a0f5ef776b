//! toolgate's offline side: learning from history. Session clustering for the
//! `session` detector ([`train`]), with linfa. Off the per-event hot path: the
//! detectors only read what is learned here.
//!
//! (The Parquet history, SQL and Postgres wire of the analytics issue will live here
//! too.)

pub mod train;
