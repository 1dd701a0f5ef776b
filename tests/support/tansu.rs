//! A tansu broker (see "Real parts in tests" in DESIGN.md) for end-to-end tests,
//! installed by `tests/tools/ensure-tansu.sh` and started on loopback, one per test.
//! Shared by the workspace's test crates (`#[path]`-included).
//!
//! Without tansu installed a test says so and passes, unless `TOOLGATE_REQUIRE_TANSU`
//! is set (CI sets it, after installing tansu).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The installed binary, or `None` (after saying why) when the tests may skip.
pub fn tansu_binary() -> Option<PathBuf> {
    let path = std::env::var_os("TOOLGATE_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/tools/tansu-0.6.0/bin/tansu"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("TOOLGATE_REQUIRE_TANSU").is_none(),
        "tansu is required but not at {}; run tests/tools/ensure-tansu.sh",
        path.display()
    );
    eprintln!(
        "skipped: tansu is not installed at {} (tests/tools/ensure-tansu.sh installs it)",
        path.display()
    );
    None
}

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").exists())
        .unwrap_or(here)
        .to_path_buf()
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The storage URL of a SQLite file at `path` (absolute), for
/// [`TansuProcess::start_with`], which runs tansu from `/`.
#[allow(dead_code)] // not every crate that includes this file uses it
pub fn sqlite_storage(path: &Path) -> String {
    let relative = path.strip_prefix("/").unwrap_or(path);
    format!("sqlite://{}", relative.display())
}

/// A running broker, killed on drop.
pub struct TansuProcess {
    child: Child,
}

impl TansuProcess {
    /// Listens on `listen`, tells clients to connect to `advertised`, and creates
    /// `topics` with `partitions` partitions each.
    pub fn start(
        binary: &Path,
        listen: u16,
        advertised: u16,
        topics: &[&str],
        partitions: i32,
    ) -> TansuProcess {
        Self::start_with(
            binary,
            listen,
            advertised,
            topics,
            partitions,
            "memory://tansu/",
            &[],
        )
    }

    /// [`TansuProcess::start`] on the `storage` engine (`memory://tansu/`, or
    /// `sqlite://PATH` to outlive the process), with more arguments to `tansu broker`
    /// (e.g. `--authentication`).
    #[allow(dead_code)] // not every crate that includes this file uses it
    pub fn start_with(
        binary: &Path,
        listen: u16,
        advertised: u16,
        topics: &[&str],
        partitions: i32,
        storage: &str,
        more: &[&str],
    ) -> TansuProcess {
        let child = Command::new(binary)
            .args(["broker", "--listener-url"])
            .arg(format!("tcp://127.0.0.1:{listen}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .args(["--storage-engine", storage])
            // tansu reads a `sqlite://` URL's host and path as one path relative to its
            // working directory: see [`sqlite_storage`].
            .current_dir("/")
            .args(more)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu broker");
        let process = TansuProcess { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        for topic in topics {
            let status = Command::new(binary)
                .args(["topic", "create", topic, "--partitions"])
                .arg(partitions.to_string())
                .arg("--broker")
                .arg(format!("tcp://127.0.0.1:{listen}"))
                .stdout(Stdio::null())
                .status()
                .expect("tansu topic create");
            assert!(status.success(), "creating {topic}");
        }
        process
    }
}

impl Drop for TansuProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
