//! Running the `toolgate` binary from end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `toolgate ARGS` in `cwd`.
pub fn toolgate(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run toolgate")
}

/// Its stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Imports the shared AgentDojo archive into `dir/output` with `toolgate import`;
/// returns its summary.
pub fn import_agentdojo(dir: &Path, output: &str) -> String {
    let archive = repo().join("../shared/datasets/agentdojo/runs-workspace-travel-banking.tar.gz");
    assert!(
        archive.exists(),
        "shared dataset missing at {}",
        archive.display()
    );
    let archive = archive.to_str().expect("archive path is UTF-8");
    let import = toolgate(
        &[
            "import",
            "agentdojo",
            "--input",
            archive,
            "--output",
            output,
        ],
        dir,
    );
    assert!(import.status.success(), "{}", stderr(&import));
    stderr(&import)
}

/// The shared AgentDojo archive imported (`events.jsonl.gz`) and analyzed
/// (`findings.jsonl`, the history under `hist`) once per test binary, in a directory
/// kept for the run: the CLI's and the history's tests check what this one run made.
pub struct AgentdojoReplay {
    /// Where the files are.
    pub dir: PathBuf,
    /// `toolgate import`'s summary.
    pub import_summary: String,
    /// `toolgate analyze`'s summary.
    pub analyze_summary: String,
}

/// See [`AgentdojoReplay`].
pub fn agentdojo_replay() -> &'static AgentdojoReplay {
    static RUN: std::sync::OnceLock<AgentdojoReplay> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let import_summary = import_agentdojo(&dir, "events.jsonl.gz");
        let analyze = toolgate(
            &[
                "analyze",
                "--input",
                "events.jsonl.gz",
                "--output",
                "findings.jsonl",
                "--history",
                "hist",
            ],
            &dir,
        );
        assert!(analyze.status.success(), "{}", stderr(&analyze));
        AgentdojoReplay {
            dir,
            import_summary,
            analyze_summary: stderr(&analyze),
        }
    })
}

/// A Python venv under target/ with `requirements` (a file under tests/) installed;
/// made once, reused by later runs. Returns its python.
///
/// Tests of one binary run in parallel threads and may ask for the same venv at once;
/// without the lock, one would run python while another was still re-creating the venv
/// on a fresh machine.
pub fn python_venv(name: &str, requirements: &str) -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = repo().join("target").join(name);
    let python = venv.join("bin/python");
    let stamp = venv.join(".requirements");
    let wanted = std::fs::read_to_string(repo().join("tests").join(requirements))
        .expect("requirements file");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return python;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3");
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let pip = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "-r"])
        .arg(repo().join("tests").join(requirements))
        .status()
        .expect("pip");
    assert!(pip.success(), "pip install -r tests/{requirements} failed");
    std::fs::write(&stamp, wanted).expect("venv stamp");
    python
}
/// The findings of every golden corpus case, each replayed with its own config.
pub fn corpus_findings() -> Vec<toolgate_protocol::Finding> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    for detector in std::fs::read_dir(repo().join("corpus")).expect("corpus") {
        let detector = detector.expect("entry").path();
        if !detector.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&detector).expect("corpus dir") {
            let input = file.expect("entry").path();
            let name = input.to_string_lossy().into_owned();
            if !name.ends_with(".jsonl") || name.ends_with(".expected.jsonl") {
                continue;
            }
            let toml = input.with_extension("toml");
            let config = toolgate::commands::load_config(toml.exists().then_some(toml.as_path()))
                .expect("config");
            toolgate_engine::replay::replay(
                &config,
                &name,
                &dir.path().join("dlq.jsonl"),
                None,
                |_| Ok(()),
                |f| {
                    out.push(f.clone());
                    Ok(())
                },
            )
            .expect("replay");
        }
    }
    out
}

/// Validates OCSF records (one JSON object per line) with `tests/python/validate_ocsf.py`;
/// whether all are valid, and its report.
pub fn ocsf_validate(lines: &[String]) -> (bool, String) {
    let python = python_venv("test-venv-ocsf", "requirements-ocsf.txt");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ocsf.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let out = Command::new(python)
        .arg(repo().join("tests/python/validate_ocsf.py"))
        .arg(&file)
        .output()
        .expect("python");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

pub mod kafka;
#[path = "../../support/topics.rs"]
pub mod topics;
