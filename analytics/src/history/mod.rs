//! The Parquet history: every event, finding and decision, one table per kind, in
//! hive-style partitions `<table>/date=YYYY-MM-DD/hour=HH/` by event time.
//!
//! [`HistoryWriter`] is synchronous and owns its files; callers run it off their hot
//! path (its own thread in the engine). Files roll by size and age; a file becomes
//! visible only whole (see [`store`]); [`HistoryWriter::commit`] publishes everything
//! open and returns only once it is durable, which is what "acknowledged" means: a
//! writer killed at any point loses only rows it had not acknowledged, and leaves
//! nothing half-written where readers look.

mod compact;
pub mod store;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Instant;

use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::Serialize;
use toolgate_detectors::secrets::Redactor;
use toolgate_protocol::config::HistoryConfig;
use toolgate_protocol::decision::Decision;
use toolgate_protocol::{Event, Finding, Timestamp};

pub use compact::CompactionStats;
use store::{Location, STAGING_DIR, Staged};

use crate::rows::{RowBuffer, event_table};
use crate::schema::Table;

/// What went wrong writing or reading history files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// A local file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An object store request.
    #[error("object store {path}: {message}")]
    Object {
        /// The object key.
        path: String,
        /// The store's error.
        message: String,
    },
    /// The `history.location` cannot be used.
    #[error("history location {location:?}: {message}")]
    Location {
        /// As configured.
        location: String,
        /// Why not.
        message: String,
    },
    /// Another process holds the lock.
    #[error("history {path} is locked by another toolgate process ({what})")]
    Locked {
        /// The lock file.
        path: String,
        /// Which lock.
        what: &'static str,
    },
    /// Encoding or decoding Parquet.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The Parquet error.
        source: ParquetError,
    },
    /// Building Arrow data.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

impl HistoryError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        HistoryError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Counters of one writer, for logs and metrics.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HistoryStats {
    /// Rows appended, by table.
    pub rows: BTreeMap<&'static str, u64>,
    /// Rows in published files (durable).
    pub rows_published: u64,
    /// Files published.
    pub files_published: u64,
    /// Bytes in published files.
    pub bytes_published: u64,
    /// In-progress files of writers that died, found and removed at start.
    pub stale_files_removed: u64,
    /// Values replaced by redaction before they were written.
    pub values_redacted: u64,
}

/// One hour of one table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Partition {
    table: Table,
    /// `date=YYYY-MM-DD/hour=HH`.
    dir: String,
}

impl Partition {
    fn of(table: Table, time: Timestamp) -> Partition {
        let rfc = time.to_string();
        Partition {
            table,
            dir: format!("date={}/hour={}", &rfc[..10], &rfc[11..13]),
        }
    }
}

struct OpenFile {
    pending: RowBuffer,
    writer: ArrowWriter<Staged>,
    staged_path: Option<PathBuf>,
    opened: Instant,
    last_write: u64,
    rows: u64,
}

/// Writes the history. One per process and location; several writers may share a
/// location (their file names never collide), but only one compacts at a time.
pub struct HistoryWriter {
    location: Location,
    config: HistoryConfig,
    staging: Option<PathBuf>,
    _lock: Option<File>,
    runtime: Option<tokio::runtime::Runtime>,
    open: BTreeMap<Partition, OpenFile>,
    redactor: Option<Redactor>,
    writer_id: String,
    seq: u64,
    clock: u64,
    stats: HistoryStats,
    props: WriterProperties,
}

impl HistoryWriter {
    /// Opens the history at `config.location`, removing in-progress files of writers
    /// that died. `redactor` is applied to every event before it is written.
    pub fn open(config: &HistoryConfig, redactor: Option<Redactor>) -> Result<Self, HistoryError> {
        let location = Location::parse(&config.location, &config.s3)?;
        let writer_id = writer_id();
        let mut stats = HistoryStats::default();
        let (staging, lock, runtime) = match &location {
            Location::Local(root) => {
                let base = root.join(STAGING_DIR);
                stats.stale_files_removed = remove_stale_staging(&base)?;
                let mine = base.join(&writer_id);
                fs::create_dir_all(&mine).map_err(|e| HistoryError::io(&mine, e))?;
                let lock = lock_file(&mine.join("writer.lock"), "writer")?;
                (Some(mine), Some(lock), None)
            }
            Location::Object { .. } => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| HistoryError::io(Path::new("tokio runtime"), e))?;
                (None, None, Some(rt))
            }
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .set_column_bloom_filter_enabled("agent_id".into(), true)
            .set_column_bloom_filter_enabled("session_id".into(), true)
            .set_created_by(format!("toolgate {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "toolgate.history".into(),
                "v1".to_string(),
            )]))
            .build();
        Ok(HistoryWriter {
            location,
            config: config.clone(),
            staging,
            _lock: lock,
            runtime,
            open: BTreeMap::new(),
            redactor: redactor.filter(Redactor::is_active),
            writer_id,
            seq: 0,
            clock: 0,
            stats,
            props,
        })
    }

    /// Where the history is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Counters so far.
    pub fn stats(&self) -> &HistoryStats {
        &self.stats
    }

    /// Appends an event (redacted first) to its kind's table.
    pub fn append_event(&mut self, event: &Event) -> Result<(), HistoryError> {
        let table = event_table(event);
        let part = Partition::of(table, event.time);
        match &self.redactor {
            Some(r) => {
                let mut copy = event.clone();
                self.stats.values_redacted += r.redact_event(&mut copy) as u64;
                self.file(part)?.pending.push_event(&copy);
            }
            None => self.file(part)?.pending.push_event(event),
        }
        self.after_append(table)
    }

    /// Appends a finding (detectors redact their evidence themselves).
    pub fn append_finding(&mut self, finding: &Finding) -> Result<(), HistoryError> {
        let part = Partition::of(Table::Findings, finding.time);
        self.file(part)?.pending.push_finding(finding);
        self.after_append(Table::Findings)
    }

    /// Appends a decision.
    pub fn append_decision(&mut self, decision: &Decision) -> Result<(), HistoryError> {
        let part = Partition::of(Table::Decisions, decision.time);
        self.file(part)?.pending.push_decision(decision);
        self.after_append(Table::Decisions)
    }

    /// Publishes every open file and makes it durable; every row appended before this
    /// call is then readable and survives a crash.
    pub fn commit(&mut self) -> Result<(), HistoryError> {
        let parts: Vec<Partition> = self.open.keys().cloned().collect();
        for part in parts {
            self.close(&part)?;
        }
        Ok(())
    }

    /// Publishes files that have been open longer than `max_file_age`; call it now and
    /// then when appends are rare (appends check too).
    pub fn roll_aged(&mut self) -> Result<(), HistoryError> {
        let max_age = self.config.max_file_age.to_std();
        let due: Vec<Partition> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= max_age)
            .map(|(p, _)| p.clone())
            .collect();
        for part in due {
            self.close(&part)?;
        }
        Ok(())
    }

    /// Merges the small files of hours no writer has written for a while (see
    /// [`compact::compact`]); needs the location's compaction lock.
    pub fn compact(
        &mut self,
        min_age: std::time::Duration,
    ) -> Result<CompactionStats, HistoryError> {
        let open: Vec<String> = self
            .open
            .keys()
            .map(|p| format!("{}/{}", p.table.name(), p.dir))
            .collect();
        compact::compact(
            &self.location,
            &self.config,
            &self.props,
            self.runtime.as_ref(),
            &open,
            min_age,
        )
    }

    /// Commits and closes.
    pub fn close_all(mut self) -> Result<HistoryStats, HistoryError> {
        self.commit()?;
        Ok(self.stats.clone())
    }

    fn file(&mut self, part: Partition) -> Result<&mut OpenFile, HistoryError> {
        self.clock += 1;
        if !self.open.contains_key(&part) {
            if self.open.len() >= self.config.max_open_files {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, f)| f.last_write)
                    .map(|(p, _)| p.clone());
                if let Some(p) = oldest {
                    self.close(&p)?;
                }
            }
            let (sink, staged_path) = match &self.staging {
                Some(dir) => {
                    self.seq += 1;
                    let path = dir.join(format!("{}.parquet", self.seq));
                    let f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(|e| HistoryError::io(&path, e))?;
                    (Staged::File(f), Some(path))
                }
                None => (Staged::Memory(Vec::new()), None),
            };
            let writer = ArrowWriter::try_new(sink, part.table.schema(), Some(self.props.clone()))
                .map_err(|source| HistoryError::Parquet {
                    path: staged_path
                        .as_ref()
                        .map_or_else(|| "memory".into(), |p| p.display().to_string()),
                    source,
                })?;
            self.open.insert(
                part.clone(),
                OpenFile {
                    pending: RowBuffer::new(part.table),
                    writer,
                    staged_path,
                    opened: Instant::now(),
                    last_write: self.clock,
                    rows: 0,
                },
            );
        }
        let clock = self.clock;
        let f = self
            .open
            .get_mut(&part)
            .ok_or_else(|| HistoryError::Locked {
                path: String::new(),
                what: "internal",
            })?;
        f.last_write = clock;
        Ok(f)
    }

    fn after_append(&mut self, table: Table) -> Result<(), HistoryError> {
        *self.stats.rows.entry(table.name()).or_default() += 1;
        let row_group = self.config.row_group_rows;
        let max_bytes = self.config.max_file_bytes;
        let mut full = Vec::new();
        for (part, f) in self.open.iter_mut().filter(|(p, _)| p.table == table) {
            if f.pending.len() >= row_group {
                write_pending(f)?;
                let size = f.writer.bytes_written() as u64 + f.writer.in_progress_size() as u64;
                if size >= max_bytes {
                    full.push(part.clone());
                }
            }
        }
        for part in full {
            self.close(&part)?;
        }
        if self.clock.is_multiple_of(4096) {
            self.roll_aged()?;
        }
        Ok(())
    }

    fn close(&mut self, part: &Partition) -> Result<(), HistoryError> {
        let Some(mut f) = self.open.remove(part) else {
            return Ok(());
        };
        write_pending(&mut f)?;
        if f.rows == 0 {
            if let Some(p) = &f.staged_path {
                fs::remove_file(p).map_err(|e| HistoryError::io(p, e))?;
            }
            return Ok(());
        }
        let staged_name = f
            .staged_path
            .as_ref()
            .map_or_else(|| "memory".into(), |p| p.display().to_string());
        let sink = f
            .writer
            .into_inner()
            .map_err(|source| HistoryError::Parquet {
                path: staged_name.clone(),
                source,
            })?;
        self.seq += 1;
        let dest = format!(
            "{}/{}/part-{}-{:06}.parquet",
            part.table.name(),
            part.dir,
            self.writer_id,
            self.seq
        );
        let bytes = match (sink, &self.location, &f.staged_path) {
            (Staged::File(file), Location::Local(root), Some(staged)) => {
                let len = file
                    .metadata()
                    .map_err(|e| HistoryError::io(staged, e))?
                    .len();
                store::publish_local(file, staged, root, &dest)?;
                len
            }
            (Staged::Memory(buf), Location::Object { store, prefix, .. }, _) => {
                let len = buf.len() as u64;
                let rt = self
                    .runtime
                    .as_ref()
                    .ok_or_else(|| HistoryError::Location {
                        location: self.config.location.clone(),
                        message: "no runtime for the object store".into(),
                    })?;
                rt.block_on(store::publish_object(store.as_ref(), prefix, &dest, buf))?;
                len
            }
            _ => {
                return Err(HistoryError::Location {
                    location: self.config.location.clone(),
                    message: "staging does not match the location".into(),
                });
            }
        };
        self.stats.rows_published += f.rows;
        self.stats.files_published += 1;
        self.stats.bytes_published += bytes;
        Ok(())
    }
}

fn write_pending(f: &mut OpenFile) -> Result<(), HistoryError> {
    if f.pending.is_empty() {
        return Ok(());
    }
    let batch = f.pending.take_sorted()?;
    f.rows += batch.num_rows() as u64;
    f.writer
        .write(&batch)
        .and_then(|()| f.writer.flush())
        .map_err(|source| HistoryError::Parquet {
            path: f
                .staged_path
                .as_ref()
                .map_or_else(|| "memory".into(), |p| p.display().to_string()),
            source,
        })
}

/// A name unique to this writer: start time and process id, so two writers never pick
/// the same file names, even on different machines sharing a bucket (with the host).
fn writer_id() -> String {
    let nanos = Timestamp::now().unix_nanos();
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in host.bytes().chain(nanos.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!(
        "{:x}{:05x}",
        nanos / 1_000_000_000,
        (h ^ u64::from(std::process::id())) & 0xfffff
    )
}

fn lock_file(path: &Path, what: &'static str) -> Result<File, HistoryError> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| HistoryError::io(path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(TryLockError::WouldBlock) => Err(HistoryError::Locked {
            path: path.display().to_string(),
            what,
        }),
        Err(TryLockError::Error(e)) => Err(HistoryError::io(path, e)),
    }
}

/// Removes the staging directories of writers that are gone (their lock is free) and
/// returns how many in-progress files they held. Their rows were never acknowledged.
fn remove_stale_staging(base: &Path) -> Result<u64, HistoryError> {
    fs::create_dir_all(base).map_err(|e| HistoryError::io(base, e))?;
    let mut removed = 0;
    for entry in fs::read_dir(base).map_err(|e| HistoryError::io(base, e))? {
        let entry = entry.map_err(|e| HistoryError::io(base, e))?;
        let dir = entry.path();
        if !dir.is_dir()
            || dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("compact"))
        {
            continue;
        }
        let lock = dir.join("writer.lock");
        let Ok(guard) = lock_file(&lock, "writer") else {
            continue;
        };
        removed += fs::read_dir(&dir)
            .map_err(|e| HistoryError::io(&dir, e))?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count() as u64;
        drop(guard);
        fs::remove_dir_all(&dir).map_err(|e| HistoryError::io(&dir, e))?;
    }
    Ok(removed)
}
