//! Durable file replacement. Every state file of toolgate (checkpoints, pins, the
//! spool's position, trained models, the signing key) is written beside its final
//! name, synced, and renamed (or linked) into place, and the directory is synced, so
//! that the rename itself survives a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who may read a file written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The process's umask decides (0644 under the usual one).
    Default,
    /// The owner only (0600): keys and anything else secret.
    Private,
}

/// The content of `path`, or `None` when there is no such file (a state file that the
/// first run writes). Any other failure is an error: state that exists but cannot be
/// read must not be taken for state that is not there yet.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Replaces `path` with `bytes`: see [`replace_with`].
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_with(path, Access::Default, |file| file.write_all(bytes))
}

/// Replaces `path` with what `write` puts in a new file: the file is made beside
/// `path` under a name of this process's own (two writers never share one), synced,
/// renamed over `path`, and the directory is synced. A reader sees the old file or the
/// new one; after a crash, one of them is there. On error the temporary file is removed
/// and `path` is untouched. Errors name the file they concern.
pub fn replace_with(
    path: &Path,
    access: Access,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temporary(path);
    let result = write_new(&tmp, access, write)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| named(e, "renaming", path)))
        .and_then(|()| sync_parent(path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `bytes` unless it exists; whether this call created it. The
/// file appears whole (a synced temporary file is hard-linked into place), so
/// processes racing to create the same file all end up reading one winner's content.
pub fn create_whole(path: &Path, bytes: &[u8], access: Access) -> io::Result<bool> {
    let tmp = temporary(path);
    let result =
        write_new(&tmp, access, |file| file.write_all(bytes)).and_then(
            |()| match std::fs::hard_link(&tmp, path) {
                Ok(()) => sync_parent(path).map(|()| true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(named(e, "creating", path)),
            },
        );
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Syncs the directory holding `path`, so a rename or a new name in it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| named(e, "syncing", dir))
}

/// `.NAME.PID.tmp` beside `path`: hidden, and this process's own.
fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per call too: two threads of one process replacing the same file at once
    // (two HTTP sessions saving pins) must not write into one temporary file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn write_new(
    tmp: &Path,
    access: Access,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if access == Access::Private {
        options.mode(0o600);
    }
    let mut file = options.open(tmp).map_err(|e| named(e, "creating", tmp))?;
    write(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(|e| named(e, "writing", tmp))
}

fn named(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_replaced_file_holds_the_new_bytes_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        replace(&path, b"one").unwrap();
        replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        replace(&path, b"old").unwrap();
        let err = replace_with(&path, Access::Default, |f| {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(err.to_string().contains(".state."), "names the file: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_private_file_is_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        replace_with(&path, Access::Private, |f| f.write_all(b"secret")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn create_whole_keeps_the_first_file_and_says_who_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert!(create_whole(&path, b"first", Access::Private).unwrap());
        assert!(!create_whole(&path, b"second", Access::Private).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_error_names_the_missing_directory() {
        let err = replace(Path::new("/nonexistent-dir/state"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/"), "{err}");
    }
}
