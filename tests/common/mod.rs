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
