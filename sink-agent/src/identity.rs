//! Who the agent is: `agent_id` from the config or `TOOLGATE_AGENT_ID`, else derived
//! from the host and the agent's process (the proxy's parent: an MCP client starts one
//! proxy per server, and they must all report the same agent). The same process names
//! the agent's run: proxies it started share one `session_id`, so session-scoped rules
//! and models see the whole run across its servers, not one half per server.

use sha2::{Digest, Sha256};

/// The environment variable an agent sets to name its run itself.
pub const SESSION_ENV: &str = "TOOLGATE_SESSION_ID";

/// The parent process's pid and start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), which keeps a reused pid from passing for the same process.
fn parent_start() -> (u32, Option<u64>) {
    let parent = std::os::unix::process::parent_id();
    let ticks = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|stat| {
            // Counted after the command name, which may hold spaces.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().nth(19)?.parse().ok()
        });
    (parent, ticks)
}

/// The agent's id when none is configured: `host/pid-starttime` of the parent process.
pub fn derived_agent_id(host: &str) -> String {
    match parent_start() {
        (parent, Some(t)) => format!("{host}/{parent}-{t}"),
        (parent, None) => format!("{host}/{parent}"),
    }
}

/// The session id of the agent's run: `TOOLGATE_SESSION_ID` when the agent sets it,
/// else a ULID whose time is the parent process's start and whose other bits are a
/// digest of the host and that process, so every proxy the agent started derives the
/// same one. `Ok(None)` where `/proc` does not say when the parent started.
pub fn agent_run_session_id(host: &str) -> Result<Option<String>, String> {
    if let Some(id) = session_from_env()? {
        return Ok(Some(id));
    }
    let (parent, Some(ticks)) = parent_start() else {
        return Ok(None);
    };
    let boot_secs: Option<u64> = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    });
    let Some(boot_secs) = boot_secs else {
        return Ok(None);
    };
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)
        .unwrap_or(100);
    let started_ms = boot_secs * 1000 + ticks * 1000 / hz;
    let digest = Sha256::digest(format!("toolgate-session/{host}/{parent}-{ticks}"));
    let mut bits = [0u8; 10];
    bits.copy_from_slice(&digest[..10]);
    Ok(Some(ulid(started_ms, bits)))
}

/// `TOOLGATE_SESSION_ID` if set: 1 to 128 characters of letters, digits and `._:-`.
pub fn session_from_env() -> Result<Option<String>, String> {
    match std::env::var(SESSION_ENV) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => check_session_id(&v).map(|()| Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{SESSION_ENV} is not UTF-8")),
    }
}

fn check_session_id(v: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
    if v.len() > 128 || !v.chars().all(allowed) {
        return Err(format!(
            "{SESSION_ENV} must be 1 to 128 letters, digits or `._:-`, found {:?}",
            v.chars().take(140).collect::<String>()
        ));
    }
    Ok(())
}

/// The host name, if the system tells it.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
}

/// A random id in Crockford base32: 48 bits of milliseconds then 80 random bits
/// (the ULID layout), so ids sort by creation time.
pub fn new_ulid(unix_millis: u64) -> std::io::Result<String> {
    let mut random = [0u8; 10];
    toolgate_edge::random::fill(&mut random)?;
    Ok(ulid(unix_millis, random))
}

/// The ULID of `unix_millis` and 80 other bits.
fn ulid(unix_millis: u64, random: [u8; 10]) -> String {
    let mut value: u128 = u128::from(unix_millis & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    const DIGITS: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 5 * (25 - i);
        *slot = DIGITS[((value >> shift) & 31) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_sort_by_time_and_differ() {
        let a = new_ulid(1_700_000_000_000).unwrap();
        let b = new_ulid(1_700_000_000_001).unwrap();
        let c = new_ulid(1_700_000_000_001).unwrap();
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_ne!(b, c);
    }

    #[test]
    fn the_derived_id_names_the_parent_process() {
        let id = derived_agent_id("h");
        let parent = std::os::unix::process::parent_id();
        assert!(id.starts_with(&format!("h/{parent}")), "{id}");
        assert_eq!(id, derived_agent_id("h"), "stable within one parent");
    }

    #[test]
    fn issue_22_the_run_session_is_stable_per_parent_and_dated_at_its_start() {
        let now = ulid(
            u64::try_from(toolgate_protocol::Timestamp::now().unix_millis()).unwrap(),
            [0; 10],
        );
        let Some(a) = agent_run_session_id("h").unwrap() else {
            return; // no /proc here
        };
        assert_eq!(a.len(), 26);
        assert_eq!(Some(a.clone()), agent_run_session_id("h").unwrap());
        assert_ne!(Some(a.clone()), agent_run_session_id("other-host").unwrap());
        assert!(
            a[..10] <= now[..10],
            "the parent started before now: {a} {now}"
        );
    }

    #[test]
    fn issue_22_a_session_id_from_the_environment_is_checked() {
        assert!(check_session_id("run-42.a:b_c").is_ok());
        assert!(check_session_id("has space").is_err());
        assert!(check_session_id(&"x".repeat(129)).is_err());
    }
}
