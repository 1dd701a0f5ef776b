//! toolgate's history and offline side.
//!
//! - [`schema`] and [`rows`]: the Arrow tables every event, finding and decision is
//!   stored in;
//! - [`history`]: the Parquet writer (hive partitions, rolling, atomic publish,
//!   compaction; local directories or `s3://`);
//! - [`sql`]: a DataFusion session over the history, with JSON functions and views;
//! - [`pgwire`]: the same session served read-only over the PostgreSQL protocol;
//! - [`train`]: session clustering for the `session` detector (linfa).
//!
//! Everything here does I/O and none of it sits on the per-event hot path: the engine
//! hands rows to the writer on a thread of its own, and detectors only read what
//! [`train`] learned.
#![deny(missing_docs)]

pub mod history;
pub mod pgwire;
pub mod rows;
pub mod schema;
pub mod sql;
pub mod train;
