//! toolgate's history and SQL: Arrow schemas for events, findings and decisions, the
//! Parquet history writer, the DataFusion catalog and SQL, the Postgres-wire server,
//! and offline model training (linfa).
//!
//! Everything here sits off the per-event hot path: the engine hands records over and
//! carries on. Nothing is built yet; the history store and SQL arrive with their own
//! issue, and this crate stays empty rather than hold placeholders.
