//! Checkpoints: one file per partition of the events topic holding the detector state
//! and the next offset to read, written together so they always match. A file is
//! replaced atomically (write, fsync, rename, fsync the directory): a reader, or an
//! engine that crashed mid-write, sees the previous checkpoint or the new one.
//!
//! Layout: `<data_dir>/checkpoints/<group>/<topic>/<partition>.ckpt`, a JSON header
//! line followed by the pipeline snapshot's bytes, then the events held for
//! reordering, one JSON line each (`{"forged":false,"offset":41,"event":{...}}`): they
//! were read before the checkpoint's offset but not yet processed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use toolgate_edge::fs::Access;
use toolgate_protocol::{Event, Timestamp};

use crate::event_time::Saved;
use crate::worker::Arrived;

/// Version 2 added the events held for reordering; version 1 (none held) still reads.
const VERSION: u32 = 2;

/// One partition's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The next offset to read: everything before it is reflected in `pipeline` or
    /// held in `held`.
    pub next_offset: i64,
    /// The offset to commit for the group: the oldest held event's, or `next_offset`
    /// with none held. A member that cannot restore this checkpoint starts there and
    /// reads the held events again.
    pub commit_offset: i64,
    /// The newest event time seen in the partition.
    pub newest: Option<Timestamp>,
    /// Every event up to this time was processed.
    pub released_up_to: Option<Timestamp>,
    /// Agents processed further by a held call, and how far.
    pub agent_released: Vec<(String, Timestamp)>,
    /// The detectors' state ([`toolgate_detectors::Pipeline::snapshot`]).
    pub pipeline: Vec<u8>,
    /// The events held for reordering, oldest first, one JSON line each.
    pub held: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    topic: String,
    partition: i32,
    next_offset: i64,
    #[serde(default)]
    commit_offset: Option<i64>,
    newest: Option<Timestamp>,
    #[serde(default)]
    released_up_to: Option<Timestamp>,
    #[serde(default)]
    agent_released: Vec<(String, Timestamp)>,
    pipeline_bytes: usize,
    #[serde(default)]
    held_bytes: usize,
}

/// How a held event is written.
#[derive(Serialize)]
struct HeldLine<'a> {
    forged: bool,
    offset: i64,
    event: &'a Event,
}

impl Checkpoint {
    /// A checkpoint of detectors in `pipeline` and the reorder buffer `saved`.
    pub fn new(next_offset: i64, pipeline: Vec<u8>, saved: &Saved<&Arrived>) -> Self {
        let mut held = Vec::new();
        let mut commit_offset = next_offset;
        for a in &saved.held {
            commit_offset = commit_offset.min(a.offset);
            let line = HeldLine {
                forged: a.forged,
                offset: a.offset,
                event: &a.event,
            };
            // Events and booleans always encode.
            let _ = serde_json::to_writer(&mut held, &line);
            held.push(b'\n');
        }
        Checkpoint {
            next_offset,
            commit_offset,
            newest: saved.newest,
            released_up_to: saved.released_up_to,
            agent_released: saved.agent_released.clone(),
            pipeline,
            held,
        }
    }
}

/// The reorder buffer a checkpoint saved; each event is decoded as from the topic.
pub fn decode_held(checkpoint: &Checkpoint) -> Result<Saved<Arrived>> {
    let mut held = Vec::new();
    for (n, line) in checkpoint.held.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut value: serde_json::Value = serde_json::from_slice(line)
            .with_context(|| format!("held event {}: not JSON", n + 1))?;
        let forged = value.get("forged").and_then(|f| f.as_bool()) == Some(true);
        // Lines written before offsets were kept: the checkpoint's own offset.
        let offset = value
            .get("offset")
            .and_then(|o| o.as_i64())
            .unwrap_or(checkpoint.next_offset);
        let event = value
            .get_mut("event")
            .map(serde_json::Value::take)
            .with_context(|| format!("held event {}: no `event`", n + 1))?;
        let event = Event::from_value(event).with_context(|| format!("held event {}", n + 1))?;
        held.push(Arrived {
            event,
            forged,
            bytes: line.len(),
            offset,
        });
    }
    Ok(Saved {
        newest: checkpoint.newest,
        released_up_to: checkpoint.released_up_to,
        agent_released: checkpoint.agent_released.clone(),
        held,
    })
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
            if !(1..=VERSION).contains(&header.version) {
                bail!(
                    "version {} (this build reads 1 to {VERSION})",
                    header.version
                );
            }
            if header.topic != self.topic || header.partition != partition {
                bail!(
                    "it belongs to {} partition {}",
                    header.topic,
                    header.partition
                );
            }
            let body = &bytes[split + 1..];
            let expected = header.pipeline_bytes.saturating_add(header.held_bytes);
            if body.len() != expected {
                bail!("state is {} bytes, the header says {expected}", body.len(),);
            }
            let (pipeline, held) = body.split_at(header.pipeline_bytes);
            Ok(Checkpoint {
                next_offset: header.next_offset,
                commit_offset: header.commit_offset.unwrap_or(header.next_offset),
                newest: header.newest,
                released_up_to: header.released_up_to,
                agent_released: header.agent_released,
                pipeline: pipeline.to_vec(),
                held: held.to_vec(),
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
            commit_offset: Some(checkpoint.commit_offset),
            newest: checkpoint.newest,
            released_up_to: checkpoint.released_up_to,
            agent_released: checkpoint.agent_released.clone(),
            pipeline_bytes: checkpoint.pipeline.len(),
            held_bytes: checkpoint.held.len(),
        };
        let path = self.path(partition);
        toolgate_edge::fs::replace_with(&path, Access::Default, |file| {
            serde_json::to_writer(&mut *file, &header)?;
            file.write_all(b"\n")?;
            file.write_all(&checkpoint.pipeline)?;
            file.write_all(&checkpoint.held)
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
        let time = Timestamp::parse("2025-03-01T10:00:00Z").unwrap();
        let event = |id: &str, agent: &str| {
            let line = format!(
                r#"{{"schema":"toolgate.event.v1","event_id":"{id}","time":"2025-03-01T09:59:50Z","agent_id":"{agent}","session_id":"s","kind":"user_message","text":"hi"}}"#
            );
            Event::decode(line.as_bytes()).unwrap()
        };
        let held = [
            Arrived {
                event: event("e1", "a"),
                forged: false,
                bytes: 1,
                offset: 40,
            },
            Arrived {
                event: event("e2", "b"),
                forged: true,
                bytes: 1,
                offset: 38,
            },
        ];
        let saved = Saved {
            newest: Some(time),
            released_up_to: Some(time.saturating_sub(toolgate_protocol::Duration::from_secs(30))),
            agent_released: vec![("a".to_string(), time)],
            held: held.iter().collect(),
        };
        let first = Checkpoint::new(42, b"{\"state\":\n1}".to_vec(), &saved);
        assert!(!first.held.is_empty());
        assert_eq!(
            (first.next_offset, first.commit_offset),
            (42, 38),
            "the group's commit stays before the oldest held event"
        );
        store.save(3, &first).unwrap();
        let loaded = store.load(3).unwrap().unwrap();
        assert_eq!(loaded, first);
        let back = decode_held(&loaded).unwrap();
        assert_eq!(
            (back.newest, back.released_up_to, &back.agent_released),
            (saved.newest, saved.released_up_to, &saved.agent_released)
        );
        let back: Vec<_> = back
            .held
            .iter()
            .map(|a| (&a.event, a.forged, a.offset))
            .collect();
        let want: Vec<_> = held
            .iter()
            .map(|a| (&a.event, a.forged, a.offset))
            .collect();
        assert_eq!(back, want, "held events and their forged marks read back");
        let second = Checkpoint {
            next_offset: 99,
            commit_offset: 99,
            newest: None,
            released_up_to: None,
            agent_released: Vec::new(),
            pipeline: Vec::new(),
            held: Vec::new(),
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
            commit_offset: 1,
            newest: None,
            released_up_to: None,
            agent_released: Vec::new(),
            pipeline: b"abc".to_vec(),
            held: Vec::new(),
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

    #[test]
    fn issue_22_a_checkpoint_written_before_events_were_held_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), "g", "t");
        std::fs::create_dir_all(&store.dir).unwrap();
        std::fs::write(
            store.path(0),
            b"{\"version\":1,\"topic\":\"t\",\"partition\":0,\"next_offset\":7,\"newest\":null,\"pipeline_bytes\":3}\nabc",
        )
        .unwrap();
        let c = store.load(0).unwrap().unwrap();
        assert_eq!(
            (c.next_offset, c.commit_offset, &c.pipeline[..]),
            (7, 7, &b"abc"[..])
        );
        assert!(decode_held(&c).unwrap().held.is_empty());
    }
}
