//! Checkpoints: one file per partition of the events topic holding the detector state
//! and the next offset to read, written together so they always match. A file is
//! replaced atomically (write, fsync, rename, fsync the directory): a reader, or an
//! engine that crashed mid-write, sees the previous checkpoint or the new one.
//!
//! Layout: `<data_dir>/checkpoints/<group>/<topic>/<partition>.ckpt`, a JSON header
//! line followed by the pipeline snapshot's bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use toolgate_edge::fs::Access;
use toolgate_protocol::Timestamp;

const VERSION: u32 = 1;

/// One partition's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The next offset to read: everything before it is reflected in `pipeline`.
    pub next_offset: i64,
    /// The newest event time seen in the partition.
    pub newest: Option<Timestamp>,
    /// The detectors' state ([`toolgate_detectors::Pipeline::snapshot`]).
    pub pipeline: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    topic: String,
    partition: i32,
    next_offset: i64,
    newest: Option<Timestamp>,
    pipeline_bytes: usize,
}

/// The checkpoints of one consumer group's topic.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    topic: String,
}

impl CheckpointStore {
    /// Checkpoints under `data_dir` for `group` reading `topic`.
    pub fn new(data_dir: &Path, group: &str, topic: &str) -> Self {
        CheckpointStore {
            dir: data_dir.join("checkpoints").join(group).join(topic),
            topic: topic.to_string(),
        }
    }

    fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("{partition}.ckpt"))
    }

    /// The partition's checkpoint, if one was written.
    pub fn load(&self, partition: i32) -> Result<Option<Checkpoint>> {
        let path = self.path(partition);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let parse = || -> Result<Checkpoint> {
            let split = bytes
                .iter()
                .position(|b| *b == b'\n')
                .context("no header line")?;
            let header: Header =
                serde_json::from_slice(&bytes[..split]).context("invalid header")?;
            if header.version != VERSION {
                bail!("version {} (this build reads {VERSION})", header.version);
            }
            if header.topic != self.topic || header.partition != partition {
                bail!(
                    "it belongs to {} partition {}",
                    header.topic,
                    header.partition
                );
            }
            let pipeline = bytes[split + 1..].to_vec();
            if pipeline.len() != header.pipeline_bytes {
                bail!(
                    "state is {} bytes, the header says {}",
                    pipeline.len(),
                    header.pipeline_bytes
                );
            }
            Ok(Checkpoint {
                next_offset: header.next_offset,
                newest: header.newest,
                pipeline,
            })
        };
        parse()
            .map(Some)
            .with_context(|| format!("checkpoint {}", path.display()))
    }

    /// Replaces the partition's checkpoint atomically and durably.
    pub fn save(&self, partition: i32, checkpoint: &Checkpoint) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let header = Header {
            version: VERSION,
            topic: self.topic.clone(),
            partition,
            next_offset: checkpoint.next_offset,
            newest: checkpoint.newest,
            pipeline_bytes: checkpoint.pipeline.len(),
        };
        let path = self.path(partition);
        toolgate_edge::fs::replace_with(&path, Access::Default, |file| {
            serde_json::to_writer(&mut *file, &header)?;
            file.write_all(b"\n")?;
            file.write_all(&checkpoint.pipeline)
        })
        .with_context(|| format!("cannot write checkpoint {}", path.display()))
    }

    /// Moves an unreadable checkpoint aside (kept for inspection), so the partition
    /// can start over from the group's committed offset.
    pub fn quarantine(&self, partition: i32) -> Result<PathBuf> {
        let path = self.path(partition);
        let aside = self.dir.join(format!("{partition}.ckpt.unreadable"));
        std::fs::rename(&path, &aside)
            .with_context(|| format!("cannot move {} aside", path.display()))?;
        Ok(aside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_exactly_and_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g", "toolgate.events");
        assert_eq!(store.load(3).unwrap(), None);
        let first = Checkpoint {
            next_offset: 42,
            newest: Some(Timestamp::parse("2025-03-01T10:00:00Z").unwrap()),
            pipeline: b"{\"state\":\n1}".to_vec(),
        };
        store.save(3, &first).unwrap();
        assert_eq!(store.load(3).unwrap(), Some(first.clone()));
        let second = Checkpoint {
            next_offset: 99,
            newest: None,
            pipeline: Vec::new(),
        };
        store.save(3, &second).unwrap();
        assert_eq!(store.load(3).unwrap(), Some(second));
        let names: Vec<_> = std::fs::read_dir(&store.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["3.ckpt"], "no temporary file is left behind");
    }

    #[test]
    fn a_damaged_or_foreign_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g", "t");
        let ckpt = Checkpoint {
            next_offset: 1,
            newest: None,
            pipeline: b"abc".to_vec(),
        };
        store.save(0, &ckpt).unwrap();
        let path = store.path(0);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = format!("{:#}", store.load(0).unwrap_err());
        assert!(
            err.contains("0.ckpt") && err.contains("state is 2 bytes"),
            "{err}"
        );
        std::fs::copy(&path, store.path(1)).unwrap();
        store.save(0, &ckpt).unwrap();
        std::fs::copy(store.path(0), store.path(1)).unwrap();
        let err = format!("{:#}", store.load(1).unwrap_err());
        assert!(err.contains("belongs to t partition 0"), "{err}");
        let aside = store.quarantine(1).unwrap();
        assert!(aside.exists());
        assert_eq!(store.load(1).unwrap(), None);
    }
}
