//! The on-disk spool in front of the Kafka producer: every event is appended here
//! before it is produced, and stays until the broker acknowledged it. So a broker that
//! is down, or a sink that is killed and started again, loses nothing that reached the
//! spool, and the backlog is replayed in the order it was written.
//!
//! A directory of segment files named by the sequence number of their first record,
//! plus a `state` file (`acked` = first sequence number not yet acknowledged, `dropped`
//! = events refused for want of room and not yet reported). A record is
//! `[u32 body length][u32 CRC-32 of body][body]`, body = `[u16 key length][key][value]`,
//! little-endian, so a record torn by a crash is recognised and cut off on the next
//! open. The directory is locked (`flock`) for one process at a time.
//!
//! Bounded: past `max_bytes` on disk an append is refused and counted in `dropped`,
//! never waited for, because the MCP stream must not stall behind the broker.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const SEGMENT_SUFFIX: &str = "seg";
const HEADER: usize = 8;

/// What the spool can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// Another process holds the directory.
    #[error("spool {path} is in use by another process", path = .0.display())]
    Busy(PathBuf),
    /// A file of the spool could not be read or written.
    #[error("spool {path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
    /// The state file is not what the spool writes.
    #[error("spool state file {path}: {message}", path = .0.display(), message = .1)]
    State(PathBuf, String),
}

/// One spooled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the spool; consecutive across segments and restarts.
    pub seq: u64,
    /// The Kafka key (the agent id).
    pub key: Vec<u8>,
    /// The event's JSON.
    pub value: Vec<u8>,
}

struct Segment {
    first: u64,
    path: PathBuf,
    bytes: u64,
}

struct Reader {
    /// Index into `segments` by first sequence number (indices shift as segments go).
    segment_first: u64,
    file: BufReader<File>,
    /// Byte offset in the segment of the next record.
    offset: u64,
    /// Sequence number of the next record.
    seq: u64,
}

/// The spool of one sink. Single-threaded: the shipper owns it.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: BufWriter<File>,
    next_seq: u64,
    acked: u64,
    saved_acked: u64,
    dropped: u64,
    corrupt: u64,
    total_bytes: u64,
    reader: Option<Reader>,
    _lock: File,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most `max_bytes` of records.
    /// A torn record at the end of the last segment, left by a crash, is cut off.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let io = |e| SpoolError::Io(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SpoolError::Io(lock_path.clone(), e))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SpoolError::Busy(dir.to_path_buf()));
        }
        let (mut acked, dropped) = read_state(dir)?;

        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == SEGMENT_SUFFIX)
                && let Some(first) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        for first in firsts {
            let path = segment_path(dir, first);
            let bytes = std::fs::metadata(&path)
                .map_err(|e| SpoolError::Io(path.clone(), e))?
                .len();
            segments.push_back(Segment { first, path, bytes });
        }

        // Only the last segment is scanned: the next one's name says where each
        // earlier one ends.
        let next_seq = match segments.back_mut() {
            Some(last) => {
                let (records, good_bytes) = scan(&last.path)?;
                if good_bytes < last.bytes {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&last.path)
                        .map_err(|e| SpoolError::Io(last.path.clone(), e))?;
                    f.set_len(good_bytes)
                        .map_err(|e| SpoolError::Io(last.path.clone(), e))?;
                    last.bytes = good_bytes;
                }
                last.first + records
            }
            None => acked,
        };
        // A state file from before the segments were cut back cannot point past them.
        acked = acked.min(next_seq);
        if segments.is_empty() {
            let path = segment_path(dir, next_seq);
            File::create(&path).map_err(|e| SpoolError::Io(path.clone(), e))?;
            segments.push_back(Segment {
                first: next_seq,
                path,
                bytes: 0,
            });
        }
        let last = segments.back().map(|s| s.path.clone()).unwrap_or_default();
        let writer = BufWriter::with_capacity(
            64 * 1024,
            OpenOptions::new()
                .append(true)
                .open(&last)
                .map_err(|e| SpoolError::Io(last.clone(), e))?,
        );
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 64 << 20),
            segments,
            writer,
            next_seq,
            acked,
            saved_acked: acked,
            dropped,
            corrupt: 0,
            total_bytes,
            reader: None,
            _lock: lock,
        };
        spool.remove_acked_segments()?;
        Ok(spool)
    }

    /// Appends an event; `false` if the spool is full (the event is counted in
    /// [`Spool::dropped`], not kept). Buffered: [`Spool::flush`] makes it readable.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Result<bool, SpoolError> {
        let key = &key[..key.len().min(u16::MAX as usize)];
        let body_len = 2 + key.len() + value.len();
        let record_len = (HEADER + body_len) as u64;
        if self.total_bytes + record_len > self.max_bytes || body_len > u32::MAX as usize {
            self.dropped += 1;
            return Ok(false);
        }
        if self
            .segments
            .back()
            .is_some_and(|s| s.bytes >= self.segment_bytes)
        {
            self.roll()?;
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&(key.len() as u16).to_le_bytes());
        crc.update(key);
        crc.update(value);
        let path = self.last_path();
        let io = |e| SpoolError::Io(path.clone(), e);
        let w = &mut self.writer;
        w.write_all(&(body_len as u32).to_le_bytes()).map_err(io)?;
        w.write_all(&crc.finalize().to_le_bytes()).map_err(io)?;
        w.write_all(&(key.len() as u16).to_le_bytes()).map_err(io)?;
        w.write_all(key).map_err(io)?;
        w.write_all(value).map_err(io)?;
        if let Some(s) = self.segments.back_mut() {
            s.bytes += record_len;
        }
        self.total_bytes += record_len;
        self.next_seq += 1;
        Ok(true)
    }

    /// Hands appended records to the file (the page cache: a killed process loses
    /// nothing flushed; a crash of the machine may lose the last moments).
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        let path = self.last_path();
        self.writer.flush().map_err(|e| SpoolError::Io(path, e))
    }

    /// The next record not yet read, in order; `None` when the reader is at the end of
    /// what was flushed.
    pub fn read_next(&mut self) -> Result<Option<Record>, SpoolError> {
        loop {
            if self.reader.is_none() {
                self.reader = Some(self.reader_at(self.acked)?);
            }
            let Some(reader) = self.reader.as_mut() else {
                return Ok(None);
            };
            if reader.seq >= self.next_seq {
                return Ok(None);
            }
            let path = segment_path(&self.dir, reader.segment_first);
            match read_record(&mut reader.file) {
                Ok(Some((key, value, len))) => {
                    let record = Record {
                        seq: reader.seq,
                        key,
                        value,
                    };
                    reader.seq += 1;
                    reader.offset += len;
                    return Ok(Some(record));
                }
                Ok(None) => {
                    // The end of a segment: the next one starts where this one ended,
                    // unless records were lost to corruption in between.
                    let following = self
                        .segments
                        .iter()
                        .map(|s| s.first)
                        .find(|&f| f > reader.segment_first);
                    match following {
                        Some(first) => {
                            self.corrupt += first.saturating_sub(reader.seq);
                            let seq = first;
                            self.reader = Some(self.open_reader(first, seq)?);
                        }
                        None => {
                            // Only flushed whole records are ever read here.
                            reader
                                .file
                                .seek(SeekFrom::Start(reader.offset))
                                .map_err(|e| SpoolError::Io(path, e))?;
                            return Ok(None);
                        }
                    }
                }
                Err(e) => return Err(SpoolError::Io(path, e)),
            }
        }
    }

    /// Reads again from `seq` (at least the acknowledged position): after a failed
    /// delivery, or when the producer could not take a record.
    pub fn seek(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = seq.max(self.acked).min(self.next_seq);
        self.reader = Some(self.reader_at(seq)?);
        Ok(())
    }

    /// Everything before `upto` was acknowledged by the broker: whole segments before it
    /// are deleted; the position is saved now and then (a crash re-sends a little,
    /// never loses).
    pub fn ack(&mut self, upto: u64) -> Result<(), SpoolError> {
        if upto <= self.acked {
            return Ok(());
        }
        self.acked = upto.min(self.next_seq);
        let deleted = self.remove_acked_segments()?;
        if deleted || self.acked - self.saved_acked >= 1024 {
            self.save_state()?;
        }
        Ok(())
    }

    /// Saves the position and the drop count (at exit, and whenever it matters).
    pub fn save_state(&mut self) -> Result<(), SpoolError> {
        let path = self.dir.join("state");
        let state = format!("acked={}\ndropped={}\n", self.acked, self.dropped);
        toolgate_edge::fs::replace(&path, state.as_bytes())
            .map_err(|e| SpoolError::Io(path.clone(), e))?;
        self.saved_acked = self.acked;
        Ok(())
    }

    /// The first sequence number not yet acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events waiting for the broker.
    pub fn pending(&self) -> u64 {
        self.next_seq - self.acked
    }

    /// Events refused for want of room, not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Counts events dropped before they reached the spool (the shipper fell behind).
    pub fn add_dropped(&mut self, count: u64) {
        self.dropped += count;
    }

    /// Records lost to a damaged segment file.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// The drops up to `count` were reported; saved at once so a restart does not
    /// report them again.
    pub fn reported_dropped(&mut self, count: u64) -> Result<(), SpoolError> {
        self.dropped = self.dropped.saturating_sub(count);
        self.save_state()
    }

    /// Bytes of records on disk.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    fn last_path(&self) -> PathBuf {
        self.segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        self.flush()?;
        let path = segment_path(&self.dir, self.next_seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| SpoolError::Io(path.clone(), e))?;
        self.writer = BufWriter::with_capacity(64 * 1024, file);
        self.segments.push_back(Segment {
            first: self.next_seq,
            path,
            bytes: 0,
        });
        Ok(())
    }

    /// Deletes segments all of whose records are acknowledged (never the last one,
    /// which is being written).
    fn remove_acked_segments(&mut self) -> Result<bool, SpoolError> {
        let mut deleted = false;
        while self.segments.len() > 1 && self.segments[1].first <= self.acked {
            if let Some(s) = self.segments.pop_front() {
                match std::fs::remove_file(&s.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(SpoolError::Io(s.path, e)),
                }
                self.total_bytes -= s.bytes;
                deleted = true;
            }
        }
        if self
            .reader
            .as_ref()
            .is_some_and(|r| !self.segments.iter().any(|s| s.first == r.segment_first))
        {
            self.reader = None;
        }
        Ok(deleted)
    }

    fn reader_at(&mut self, seq: u64) -> Result<Reader, SpoolError> {
        let first = self
            .segments
            .iter()
            .rev()
            .map(|s| s.first)
            .find(|&f| f <= seq)
            .or_else(|| self.segments.front().map(|s| s.first))
            .unwrap_or(seq);
        self.flush()?;
        let mut reader = self.open_reader(first, first)?;
        while reader.seq < seq {
            let path = segment_path(&self.dir, first);
            match read_record(&mut reader.file).map_err(|e| SpoolError::Io(path, e))? {
                Some((_, _, len)) => {
                    reader.seq += 1;
                    reader.offset += len;
                }
                None => break,
            }
        }
        Ok(reader)
    }

    fn open_reader(&self, first: u64, seq: u64) -> Result<Reader, SpoolError> {
        let path = segment_path(&self.dir, first);
        let file = File::open(&path).map_err(|e| SpoolError::Io(path.clone(), e))?;
        Ok(Reader {
            segment_first: first,
            file: BufReader::with_capacity(64 * 1024, file),
            offset: 0,
            seq,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.flush();
        let _ = self.save_state();
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEGMENT_SUFFIX}"))
}

fn read_state(dir: &Path) -> Result<(u64, u64), SpoolError> {
    let path = dir.join("state");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(SpoolError::Io(path, e)),
    };
    let (mut acked, mut dropped) = (0, 0);
    for line in text.lines() {
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| SpoolError::State(path.clone(), format!("line {line:?}")))?;
        let value: u64 = value
            .parse()
            .map_err(|_| SpoolError::State(path.clone(), format!("{name}: not a count")))?;
        match name {
            "acked" => acked = value,
            "dropped" => dropped = value,
            other => {
                return Err(SpoolError::State(
                    path.clone(),
                    format!("unknown field {other:?}"),
                ));
            }
        }
    }
    Ok((acked, dropped))
}

/// Counts the whole, intact records of a segment and the bytes they span.
fn scan(path: &Path) -> Result<(u64, u64), SpoolError> {
    let file = File::open(path).map_err(|e| SpoolError::Io(path.to_path_buf(), e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let (mut records, mut bytes) = (0, 0);
    loop {
        match read_record(&mut reader) {
            Ok(Some((_, _, len))) => {
                records += 1;
                bytes += len;
            }
            Ok(None) => return Ok((records, bytes)),
            Err(e) => return Err(SpoolError::Io(path.to_path_buf(), e)),
        }
    }
}

type Decoded = (Vec<u8>, Vec<u8>, u64);

/// The next record, or `None` at the end or at a torn or damaged record (which ends
/// what can be trusted of the segment).
fn read_record(r: &mut impl Read) -> std::io::Result<Option<Decoded>> {
    let mut header = [0u8; HEADER];
    if !read_full(r, &mut header)? {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if body_len < 2 {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len];
    if !read_full(r, &mut body)? || crc32fast::hash(&body) != crc {
        return Ok(None);
    }
    let key_len = u16::from_le_bytes([body[0], body[1]]) as usize;
    if 2 + key_len > body.len() {
        return Ok(None);
    }
    let value = body.split_off(2 + key_len);
    body.drain(..2);
    Ok(Some((body, value, (HEADER + body_len) as u64)))
}

/// Fills `buf`; `false` if the input ended first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(spool: &mut Spool) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(r) = spool.read_next().unwrap() {
            out.push((r.seq, String::from_utf8(r.value).unwrap()));
        }
        out
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            let padding = "x".repeat(100);
            for i in 0..3000 {
                let value = format!("event {i} {padding}");
                assert!(s.append(b"agent-1", value.as_bytes()).unwrap());
            }
            s.flush().unwrap();
            let read = drain(&mut s);
            assert_eq!(read.len(), 3000);
            assert!(read[2999].1.starts_with("event 2999 "));
            assert!(s.segments.len() > 1, "128 KiB segments must roll");
            s.ack(1000).unwrap();
        }
        // A restart replays what was not acknowledged, from where it was.
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.acked(), 1000);
        assert_eq!(s.next_seq(), 3000);
        let read = drain(&mut s);
        assert_eq!(read[0].0, 1000);
        assert!(read[0].1.starts_with("event 1000 "));
        assert_eq!(read.len(), 2000);
        assert!(s.append(b"agent-1", b"after restart").unwrap());
        s.flush().unwrap();
        assert_eq!(drain(&mut s), vec![(3000, "after restart".to_string())]);
    }

    #[test]
    fn acknowledged_segments_are_deleted_and_room_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 256 * 1024).unwrap();
        let value = vec![b'x'; 1000];
        let mut kept = 0;
        while s.append(b"k", &value).unwrap() {
            kept += 1;
        }
        assert_eq!(s.dropped(), 1);
        assert!(s.bytes() <= 256 * 1024);
        s.flush().unwrap();
        s.ack(kept).unwrap();
        assert!(s.bytes() < 80 * 1024, "{} bytes left", s.bytes());
        assert!(s.append(b"k", &value).unwrap());
        s.reported_dropped(1).unwrap();
        drop(s);
        let s = Spool::open(dir.path(), 256 * 1024).unwrap();
        assert_eq!((s.acked(), s.dropped(), s.pending()), (kept, 0, 1));
    }

    #[test]
    fn a_torn_record_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.append(b"k", b"whole").unwrap();
            s.append(b"k", b"torn by a crash").unwrap();
        }
        let seg = segment_path(dir.path(), 0);
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.next_seq(), 1);
        s.append(b"k", b"next").unwrap();
        s.flush().unwrap();
        assert_eq!(
            drain(&mut s),
            vec![(0, "whole".to_string()), (1, "next".to_string())]
        );
    }

    #[test]
    fn seek_rereads_from_a_failed_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..10 {
            s.append(b"k", format!("{i}").as_bytes()).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(drain(&mut s).len(), 10);
        s.ack(4).unwrap();
        s.seek(6).unwrap();
        assert_eq!(drain(&mut s)[0], (6, "6".to_string()));
        s.seek(0).unwrap();
        assert_eq!(drain(&mut s)[0], (4, "4".to_string()));
    }

    #[test]
    fn one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), 1 << 20),
            Err(SpoolError::Busy(_))
        ));
    }

    #[test]
    fn a_bad_state_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state"), "acked=x\n").unwrap();
        let err = Spool::open(dir.path(), 1 << 20).err().unwrap().to_string();
        assert!(err.contains("acked: not a count"), "{err}");
    }
}
