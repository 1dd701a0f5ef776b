//! Facts about this process that summaries report.

/// Peak resident memory of this process in bytes (Linux `VmHWM`); `None` where the
/// platform does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `peak memory: N MiB`, or nothing where it is unknown.
pub fn peak_rss_note() -> String {
    peak_rss_bytes().map_or_else(String::new, |b| {
        format!("peak memory: {:.1} MiB\n", b as f64 / (1024.0 * 1024.0))
    })
}
