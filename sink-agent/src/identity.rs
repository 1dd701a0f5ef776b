//! Who the agent is: `agent_id` from the config or `TOOLGATE_AGENT_ID`, else derived
//! from the host and the agent's process (the proxy's parent: an MCP client starts one
//! proxy per server, and they must all report the same agent).

/// The agent's id when none is configured: `host/pid-starttime` of the parent process.
/// The start time (from `/proc`) keeps a reused pid from merging two agents.
pub fn derived_agent_id(host: &str) -> String {
    let parent = std::os::unix::process::parent_id();
    let started = std::fs::read_to_string(format!("/proc/{parent}/stat"))
        .ok()
        .and_then(|stat| {
            // Field 22 (starttime), counted after the command name, which may hold spaces.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().nth(19).map(str::to_string)
        });
    match started {
        Some(t) => format!("{host}/{parent}-{t}"),
        None => format!("{host}/{parent}"),
    }
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
    Ok(String::from_utf8_lossy(&out).into_owned())
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
}
