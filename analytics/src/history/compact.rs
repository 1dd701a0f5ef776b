//! Compaction: an hour's small files merged into one, sorted by agent and time.
//!
//! On a local directory the swap is atomic for readers: the new partition directory
//! (the merged file plus hard links to the files left alone) is exchanged with the old
//! one in a single `renameat2(RENAME_EXCHANGE)`, so a listing sees the old files or the
//! new file, never both and never neither. A journal in the staging directory lets the
//! next compaction finish or undo one that was killed half way, and a file a writer
//! published into the old directory during the swap is moved back, not lost.
//!
//! Object stores have no multi-object swap: the merged object is PUT, then the inputs
//! are deleted, and a query planned in between may count those rows twice.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::properties::WriterProperties;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use toolgate_protocol::config::HistoryConfig;

use super::store::{Location, STAGING_DIR, sync_dirs};
use super::{HistoryError, lock_file};
use crate::rows::sort_clustered;
use crate::schema::Table;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CompactionStats {
    /// Partitions (table and hour) rewritten.
    pub partitions: u64,
    /// Small files merged away.
    pub files_in: u64,
    /// Files written.
    pub files_out: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Interrupted compactions found and finished or undone.
    pub recovered: u64,
}

#[derive(Serialize, Deserialize)]
struct Journal {
    partition: String,
    inputs: Vec<String>,
    output: String,
}

/// One file in a partition.
struct Part {
    name: String,
    size: u64,
    modified: SystemTime,
}

/// Compacts every partition of every table that has at least `compact_min_files`
/// files smaller than `compact_small_file_bytes`, none of them modified in the last
/// `min_age`, and that is not in `open` (`<table>/date=…/hour=…` a live writer of
/// this process still writes).
pub fn compact(
    location: &Location,
    config: &HistoryConfig,
    props: &WriterProperties,
    runtime: Option<&tokio::runtime::Runtime>,
    open: &[String],
    min_age: Duration,
) -> Result<CompactionStats, HistoryError> {
    match location {
        Location::Local(root) => compact_local(root, config, props, open, min_age),
        Location::Object { store, prefix, .. } => {
            let rt = runtime.ok_or_else(|| HistoryError::Location {
                location: config.location.clone(),
                message: "no runtime for the object store".into(),
            })?;
            rt.block_on(compact_object(
                store.as_ref(),
                prefix,
                config,
                props,
                open,
                min_age,
            ))
        }
    }
}

fn compact_local(
    root: &Path,
    config: &HistoryConfig,
    props: &WriterProperties,
    open: &[String],
    min_age: Duration,
) -> Result<CompactionStats, HistoryError> {
    let staging = root.join(STAGING_DIR);
    fs::create_dir_all(&staging).map_err(|e| HistoryError::io(&staging, e))?;
    let _lock = lock_file(&staging.join("compact.lock"), "compaction")?;
    let mut stats = CompactionStats {
        recovered: recover(root, &staging)?,
        ..CompactionStats::default()
    };
    let now = SystemTime::now();
    for table in Table::ALL {
        for partition in partitions(&root.join(table.name()))? {
            let rel = format!("{}/{partition}", table.name());
            if open.contains(&rel) {
                continue;
            }
            let dir = root.join(&rel);
            let parts = list_local(&dir)?;
            let small: Vec<&Part> = parts
                .iter()
                .filter(|p| p.size < config.compact_small_file_bytes)
                .collect();
            let quiet = parts
                .iter()
                .all(|p| now.duration_since(p.modified).unwrap_or_default() >= min_age);
            if small.len() < config.compact_min_files || !quiet {
                continue;
            }
            let inputs: Vec<String> = small.iter().map(|p| p.name.clone()).collect();
            let rows = swap_local(root, &staging, table, &rel, &parts, &inputs, props)?;
            stats.partitions += 1;
            stats.files_in += inputs.len() as u64;
            stats.files_out += 1;
            stats.rows += rows;
        }
    }
    Ok(stats)
}

/// The `date=…/hour=…` directories under a table directory.
fn partitions(table_dir: &Path) -> Result<Vec<String>, HistoryError> {
    let mut out = Vec::new();
    for date in read_dir_sorted(table_dir)? {
        if !date.starts_with("date=") {
            continue;
        }
        for hour in read_dir_sorted(&table_dir.join(&date))? {
            if hour.starts_with("hour=") {
                out.push(format!("{date}/{hour}"));
            }
        }
    }
    Ok(out)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<String>, HistoryError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HistoryError::io(dir, e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn list_local(dir: &Path) -> Result<Vec<Part>, HistoryError> {
    let mut parts = Vec::new();
    for name in read_dir_sorted(dir)? {
        if !name.ends_with(".parquet") {
            continue;
        }
        let path = dir.join(&name);
        let meta = fs::metadata(&path).map_err(|e| HistoryError::io(&path, e))?;
        parts.push(Part {
            name,
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(parts)
}

/// Reads `inputs` and writes them as one sorted file into `out`; returns its rows.
fn merge<W: std::io::Write + Send>(
    table: Table,
    inputs: Vec<(String, bytes::Bytes)>,
    out: W,
    props: &WriterProperties,
) -> Result<(u64, W), HistoryError> {
    let parquet_err = |path: &str| {
        let path = path.to_string();
        move |source| HistoryError::Parquet {
            path: path.clone(),
            source,
        }
    };
    let mut batches = Vec::new();
    for (name, bytes) in inputs {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(parquet_err(&name))?;
        for batch in reader {
            batches.push(to_table_schema(table, batch?)?);
        }
    }
    let all = concat_batches(&table.schema(), &batches)?;
    let sorted = sort_clustered(table, &all)?;
    let mut writer = ArrowWriter::try_new(out, table.schema(), Some(props.clone()))
        .map_err(parquet_err("merged"))?;
    writer.write(&sorted).map_err(parquet_err("merged"))?;
    let out = writer.into_inner().map_err(parquet_err("merged"))?;
    Ok((sorted.num_rows() as u64, out))
}

/// A batch of a file written before the table gained columns (`findings.outcome`),
/// with those columns as nulls: the schemas are extended, never renamed, so every
/// column of the file is in the table.
fn to_table_schema(table: Table, batch: RecordBatch) -> Result<RecordBatch, HistoryError> {
    let schema = table.schema();
    if batch.schema().fields().len() == schema.fields().len() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => column.clone(),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn swap_local(
    root: &Path,
    staging: &Path,
    table: Table,
    rel: &str,
    parts: &[Part],
    inputs: &[String],
    props: &WriterProperties,
) -> Result<u64, HistoryError> {
    let dir = root.join(rel);
    let work = staging.join(format!("compact-{}", super::writer_id()));
    let new_dir = work.join("new");
    fs::create_dir_all(&new_dir).map_err(|e| HistoryError::io(&new_dir, e))?;
    let output = format!("part-{}-compacted.parquet", super::writer_id());
    let journal = Journal {
        partition: rel.to_string(),
        inputs: inputs.to_vec(),
        output: output.clone(),
    };
    let journal_path = work.join("journal.json");
    let text = serde_json::to_vec(&journal).unwrap_or_default();
    fs::write(&journal_path, text).map_err(|e| HistoryError::io(&journal_path, e))?;

    let mut data = Vec::new();
    for name in inputs {
        let p = dir.join(name);
        let bytes = fs::read(&p).map_err(|e| HistoryError::io(&p, e))?;
        data.push((p.display().to_string(), bytes::Bytes::from(bytes)));
    }
    let out_path = new_dir.join(&output);
    let file = fs::File::create(&out_path).map_err(|e| HistoryError::io(&out_path, e))?;
    let (rows, file) = merge(table, data, file, props)?;
    file.sync_all()
        .map_err(|e| HistoryError::io(&out_path, e))?;
    for p in parts.iter().filter(|p| !inputs.contains(&p.name)) {
        let (from, to) = (dir.join(&p.name), new_dir.join(&p.name));
        fs::hard_link(&from, &to).map_err(|e| HistoryError::io(&to, e))?;
    }
    sync_dirs(staging, &new_dir)?;
    exchange(&new_dir, &dir)?;
    sync_dirs(root, &dir)?;
    // `new_dir` now holds the old partition: inputs, links, and anything a writer
    // published between our listing and the exchange, which goes back.
    restore_strays(&new_dir, &dir, &journal)?;
    fs::remove_dir_all(&work).map_err(|e| HistoryError::io(&work, e))?;
    Ok(rows)
}

/// Moves files from the swapped-out directory `old` that are neither inputs nor
/// already in `dir` back into `dir`.
fn restore_strays(old: &Path, dir: &Path, journal: &Journal) -> Result<(), HistoryError> {
    for name in read_dir_sorted(old)? {
        let target = dir.join(&name);
        if journal.inputs.contains(&name) || target.exists() {
            continue;
        }
        fs::rename(old.join(&name), &target).map_err(|e| HistoryError::io(&target, e))?;
    }
    sync_dirs(dir, dir)
}

/// Finishes or undoes compactions a killed process left in the staging directory.
fn recover(root: &Path, staging: &Path) -> Result<u64, HistoryError> {
    let mut recovered = 0;
    for name in read_dir_sorted(staging)? {
        if !name.starts_with("compact-") {
            continue;
        }
        let work = staging.join(&name);
        let journal: Option<Journal> = fs::read(work.join("journal.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(j) = &journal {
            let dir = root.join(&j.partition);
            let swapped = dir.join(&j.output).exists();
            let new_dir = work.join("new");
            if swapped && new_dir.is_dir() {
                restore_strays(&new_dir, &dir, j)?;
            }
        }
        fs::remove_dir_all(&work).map_err(|e| HistoryError::io(&work, e))?;
        recovered += 1;
    }
    Ok(recovered)
}

/// Swaps two directories atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<(), HistoryError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| HistoryError::io(p, e.into()))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(HistoryError::io(b, std::io::Error::last_os_error()))
    }
}

/// Without an atomic exchange: move the old directory aside, then the new one in.
/// A listing in between sees the hour empty.
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<(), HistoryError> {
    let aside = a.with_extension("old");
    fs::rename(b, &aside).map_err(|e| HistoryError::io(b, e))?;
    fs::rename(a, b).map_err(|e| HistoryError::io(a, e))?;
    fs::rename(&aside, a).map_err(|e| HistoryError::io(a, e))
}

async fn compact_object(
    store: &dyn object_store::ObjectStore,
    prefix: &str,
    config: &HistoryConfig,
    props: &WriterProperties,
    open: &[String],
    min_age: Duration,
) -> Result<CompactionStats, HistoryError> {
    let obj_err = |path: String| {
        move |e: object_store::Error| HistoryError::Object {
            path: path.clone(),
            message: e.to_string(),
        }
    };
    let mut stats = CompactionStats::default();
    let now = chrono_now();
    for table in Table::ALL {
        let base = Location::object_path(prefix, table.name());
        let metas: Vec<object_store::ObjectMeta> = store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(obj_err(base.to_string()))?;
        let mut by_partition: std::collections::BTreeMap<String, Vec<object_store::ObjectMeta>> =
            Default::default();
        for m in metas {
            let key = m.location.to_string();
            let Some((dir, file)) = key.rsplit_once('/') else {
                continue;
            };
            if !file.ends_with(".parquet") || !dir.contains("/date=") {
                continue;
            }
            by_partition.entry(dir.to_string()).or_default().push(m);
        }
        for (dir, metas) in by_partition {
            let rel = dir
                .strip_prefix(prefix)
                .unwrap_or(&dir)
                .trim_start_matches('/')
                .to_string();
            if open.contains(&rel) {
                continue;
            }
            let quiet = metas.iter().all(|m| {
                now.saturating_sub(m.last_modified.timestamp()) as u64 >= min_age.as_secs()
            });
            let small: Vec<&object_store::ObjectMeta> = metas
                .iter()
                .filter(|m| m.size < config.compact_small_file_bytes)
                .collect();
            if small.len() < config.compact_min_files || !quiet {
                continue;
            }
            let mut data = Vec::new();
            for m in &small {
                let bytes = store
                    .get(&m.location)
                    .await
                    .map_err(obj_err(m.location.to_string()))?
                    .bytes()
                    .await
                    .map_err(obj_err(m.location.to_string()))?;
                data.push((m.location.to_string(), bytes));
            }
            let (rows, buf) = merge(table, data, Vec::new(), props)?;
            let dest = format!("{rel}/part-{}-compacted.parquet", super::writer_id());
            super::store::publish_object(store, prefix, &dest, buf).await?;
            for m in &small {
                store
                    .delete(&m.location)
                    .await
                    .map_err(obj_err(m.location.to_string()))?;
            }
            stats.partitions += 1;
            stats.files_in += small.len() as u64;
            stats.files_out += 1;
            stats.rows += rows;
        }
    }
    Ok(stats)
}

fn chrono_now() -> i64 {
    toolgate_protocol::Timestamp::now().unix_nanos() / 1_000_000_000
}
