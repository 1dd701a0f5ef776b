//! Where history files live: a local directory (our own atomic publish: write under
//! `_tmp/`, fsync, rename into the partition, fsync the directories) or an object
//! store (`s3://…`), where a completed PUT is the atomic publish.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use toolgate_protocol::config::S3Config;

use super::HistoryError;

/// The directory that holds in-progress files; readers never look in it (a leading
/// `_` is how hive-style readers — DataFusion, DuckDB, pyarrow, Spark — mark
/// directories that are not data).
pub const STAGING_DIR: &str = "_tmp";

/// A parsed history location.
#[derive(Clone)]
pub enum Location {
    /// A local directory.
    Local(PathBuf),
    /// An object store, with the URL of the bucket (`s3://bucket`) and the prefix in it.
    Object {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// `s3://bucket`, as DataFusion registers stores by.
        bucket_url: String,
        /// Key prefix under the bucket, without slashes at either end (may be empty).
        prefix: String,
    },
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Object {
                bucket_url, prefix, ..
            } => write!(f, "{bucket_url}/{prefix}"),
        }
    }
}

impl Location {
    /// Parses `s3://bucket/prefix`, `file:///path` or a plain path.
    pub fn parse(location: &str, s3: &S3Config) -> Result<Location, HistoryError> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(HistoryError::Location {
                    location: location.into(),
                    message: "no bucket name after s3://".into(),
                });
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if s3.allow_http {
                builder = builder.with_allow_http(true);
            }
            let store = builder.build().map_err(|e| HistoryError::Location {
                location: location.into(),
                message: e.to_string(),
            })?;
            return Ok(Location::Object {
                store: Arc::new(store),
                bucket_url: format!("s3://{bucket}"),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if location.contains("://") && !location.starts_with("file://") {
            return Err(HistoryError::Location {
                location: location.into(),
                message: "only local directories, file:// and s3:// are supported".into(),
            });
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Location::Local(PathBuf::from(path)))
    }

    /// The URL DataFusion lists a table's files under.
    pub fn table_url(&self, table: &str) -> Result<String, HistoryError> {
        match self {
            Location::Local(dir) => {
                let abs = std::path::absolute(dir).map_err(|e| HistoryError::io(dir, e))?;
                Ok(format!("file://{}/{table}/", abs.display()))
            }
            Location::Object {
                bucket_url, prefix, ..
            } => Ok(if prefix.is_empty() {
                format!("{bucket_url}/{table}/")
            } else {
                format!("{bucket_url}/{prefix}/{table}/")
            }),
        }
    }

    /// The object key of `relative` under the prefix.
    pub fn object_path(prefix: &str, relative: &str) -> ObjectPath {
        if prefix.is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{prefix}/{relative}"))
        }
    }
}

/// Bytes being written to one in-progress file.
pub enum Staged {
    /// A file under `_tmp/`.
    File(File),
    /// A buffer PUT whole on publish.
    Memory(Vec<u8>),
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Staged::File(f) => f.write(buf),
            Staged::Memory(v) => v.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Staged::File(f) => f.flush(),
            Staged::Memory(_) => Ok(()),
        }
    }
}

/// Moves a finished staging file to `dest` under `root` so that a reader sees all of it
/// or nothing, and so that it survives a crash once this returns.
pub fn publish_local(
    file: File,
    staged: &Path,
    root: &Path,
    dest: &str,
) -> Result<(), HistoryError> {
    file.sync_all().map_err(|e| HistoryError::io(staged, e))?;
    drop(file);
    let target = root.join(dest);
    let parent = target.parent().unwrap_or(root);
    fs::create_dir_all(parent).map_err(|e| HistoryError::io(parent, e))?;
    fs::rename(staged, &target).map_err(|e| HistoryError::io(&target, e))?;
    sync_dirs(root, parent)
}

/// fsyncs `dir` and each directory above it up to and including `root`, so a rename
/// and any directories created for it are durable.
pub fn sync_dirs(root: &Path, dir: &Path) -> Result<(), HistoryError> {
    let mut d = Some(dir);
    while let Some(cur) = d {
        File::open(cur)
            .and_then(|f| f.sync_all())
            .map_err(|e| HistoryError::io(cur, e))?;
        if cur == root {
            break;
        }
        d = cur.parent();
    }
    Ok(())
}

/// PUTs a finished file; S3 makes an object visible only once the PUT completes.
pub async fn publish_object(
    store: &dyn ObjectStore,
    prefix: &str,
    dest: &str,
    bytes: Vec<u8>,
) -> Result<(), HistoryError> {
    let path = Location::object_path(prefix, dest);
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| HistoryError::Object {
            path: path.to_string(),
            message: e.to_string(),
        })?;
    Ok(())
}
