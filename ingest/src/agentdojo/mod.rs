//! Importer for AgentDojo's recorded runs (ethz-spylab/agentdojo, `runs/`): every run
//! becomes one session of `toolgate.event.v1` events, so offline replay, detectors and
//! `toolgate eval` can be measured on real agents under real prompt-injection attacks.
//!
//! - Input: a `runs/` directory, or the `.tar.gz` it ships in (read as a stream,
//!   never unpacked), or a single run file.
//! - Identity: each run is a fresh agent in a freshly loaded environment, so each run
//!   is its own agent instance and session (`<pipeline>/<suite>/<user_task>/<attack>/
//!   <injection_task>`, taken from the file's path in AgentDojo's layout, since the
//!   files' own `pipeline_name` is `local-…` for every locally served model); the
//!   suite's role from the mapping is the `agent_role`.
//! - Events: user messages, tool calls and results (matched to their call by id, name
//!   or position, since many runs have no call ids). Tool and server come from the
//!   [`mapping`]; `trust_domain` is the server's, as a sink would report it.
//! - Ground truth stays in labels and never in fields detectors read as facts:
//!   `suite`, `pipeline`, `user_task`, `injection_task`, `attack_type` (`none` for benign
//!   runs), `security`, `utility`, `outcome` (`benign`, `attack_succeeded`,
//!   `attack_failed`, `unknown`), `task_kind` (`user_task`, or
//!   `injection_task_as_user_task` for AgentDojo's runs of an injection task as the
//!   user's own request), `run_error`, and on results that carry injected text,
//!   `injection_vectors`.
//! - Time is synthetic: runs are laid one after another in input order, one second per
//!   event and a minute between runs, so the output is sorted by event time.

pub mod mapping;
mod run;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use toolgate_protocol::event::Event;
use toolgate_protocol::{Duration, Timestamp};

use crate::{IngestError, files_under, open_maybe_gzip};
pub use mapping::Mapping;
pub use run::{OUTCOME_ATTACK_FAILED, OUTCOME_ATTACK_SUCCEEDED, OUTCOME_BENIGN};

/// Where the synthetic clock starts.
pub const EPOCH: &str = "2025-01-01T00:00:00Z";

/// Gap between consecutive runs.
pub const RUN_GAP: Duration = Duration::from_secs(60);

/// Largest run file read (the biggest in the shared dataset is under 1 MB).
const MAX_RUN_BYTES: u64 = 64 << 20;

/// What an import did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportStats {
    /// Run files converted.
    pub runs: u64,
    /// Runs by `outcome` label.
    pub runs_by_outcome: BTreeMap<String, u64>,
    /// Events written, by kind.
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Results carrying injected text.
    pub injected_results: u64,
    /// Tools the mapping does not list, with their call counts.
    pub unmapped_tools: BTreeMap<String, u64>,
    /// Results no call could be matched to.
    pub unmatched_results: u64,
    /// Files that were not valid run files, with the reason (first 100).
    pub bad_files: Vec<(String, String)>,
    /// How many files were bad in all.
    pub bad_file_count: u64,
}

impl ImportStats {
    /// Events written in all.
    pub fn events(&self) -> u64 {
        self.events_by_kind.values().sum()
    }

    fn bad_file(&mut self, path: String, reason: String) {
        self.bad_file_count += 1;
        if self.bad_files.len() < 100 {
            self.bad_files.push((path, reason));
        }
    }
}

/// Converts one run file's bytes (`name` is its path, which identifies the run in
/// AgentDojo's layout), starting the clock at `start`. A file that is not a run is
/// recorded in `stats.bad_files` and yields no events.
pub fn convert_run(
    name: &str,
    bytes: &[u8],
    mapping: &Mapping,
    start: Timestamp,
    stats: &mut ImportStats,
) -> Vec<Event> {
    match serde_json::from_slice::<run::Run>(bytes) {
        Ok(parsed) => {
            let id = run::RunId::locate(name, &parsed);
            stats.runs += 1;
            let events = run::convert(id, parsed, mapping, start, stats);
            for e in &events {
                *stats.events_by_kind.entry(e.kind().as_str()).or_default() += 1;
            }
            events
        }
        Err(e) => {
            stats.bad_file(name.to_string(), e.to_string());
            Vec::new()
        }
    }
}

/// Converts every run under `input`, calling `emit` for each event in order.
pub fn import(
    input: &Path,
    mapping: &Mapping,
    mut emit: impl FnMut(&Event) -> Result<(), IngestError>,
) -> Result<ImportStats, IngestError> {
    let mut stats = ImportStats::default();
    let mut clock = Timestamp::parse(EPOCH).unwrap_or(Timestamp::EPOCH);
    let mut one =
        |name: String, bytes: &[u8], stats: &mut ImportStats| -> Result<(), IngestError> {
            let events = convert_run(&name, bytes, mapping, clock, stats);
            for e in &events {
                emit(e)?;
            }
            if let Some(last) = events.last() {
                clock = last.time.saturating_add(RUN_GAP);
            }
            Ok(())
        };

    for_each_run_file(input, &mut |name, bytes| match bytes {
        Ok(bytes) => one(name, bytes, &mut stats),
        Err(reason) => {
            stats.bad_file(name, reason);
            Ok(())
        }
    })?;
    Ok(stats)
}

/// What [`for_each_run_file`] calls: a file's name, and its bytes or why it was not read.
pub type EachRunFile<'a> = dyn FnMut(String, Result<&[u8], String>) -> Result<(), IngestError> + 'a;

/// Calls `each` with the name and bytes of every run file under `input`: a `runs/`
/// directory, one run file, or a tar archive of them (gzipped or not, read as a stream).
/// A file too large to be a run is passed as an error saying so.
pub fn for_each_run_file(input: &Path, each: &mut EachRunFile<'_>) -> Result<(), IngestError> {
    let meta =
        std::fs::metadata(input).map_err(|e| IngestError::io(input.display().to_string(), e))?;
    if meta.is_dir() {
        let files = files_under(input, &is_json_file)?;
        if files.is_empty() {
            return Err(IngestError::Input {
                path: input.display().to_string(),
                message: "no run files (*.json) here".into(),
            });
        }
        for path in files {
            let bytes =
                std::fs::read(&path).map_err(|e| IngestError::io(path.display().to_string(), e))?;
            each(path.display().to_string(), Ok(&bytes))?;
        }
    } else if is_json_file(input) {
        let bytes =
            std::fs::read(input).map_err(|e| IngestError::io(input.display().to_string(), e))?;
        each(input.display().to_string(), Ok(&bytes))?;
    } else {
        // A tar archive, gzipped or not: read entry by entry, never unpacked.
        let reader = open_maybe_gzip(input)?;
        let mut archive = tar::Archive::new(reader);
        let name = input.display().to_string();
        let entries = archive
            .entries()
            .map_err(|e| IngestError::io(name.clone(), e))?;
        let mut any = false;
        for entry in entries {
            let entry = entry.map_err(|e| IngestError::io(name.clone(), e))?;
            let path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if !entry.header().entry_type().is_file() || !path.ends_with(".json") {
                continue;
            }
            any = true;
            if entry.size() > MAX_RUN_BYTES {
                each(path, Err(format!("larger than {MAX_RUN_BYTES} bytes")))?;
                continue;
            }
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            entry
                .take(MAX_RUN_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|e| IngestError::io(format!("{name}:{path}"), e))?;
            each(path, Ok(&bytes))?;
        }
        if !any {
            return Err(IngestError::Input {
                path: name,
                message: "not a directory, a run file, or a tar archive of run files".into(),
            });
        }
    }
    Ok(())
}

fn is_json_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "json")
}
