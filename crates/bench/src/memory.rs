//! The process's resident memory, from `/proc/self/status`, for showing that a rebuild's memory
//! does not grow with the history it replays.
//!
//! The peak (`VmHWM`) can be reset on Linux by writing `5` to `/proc/self/clear_refs`, which is
//! what lets one process measure the peak of several phases in turn. Where that is refused, the
//! caller falls back to the largest `VmRSS` it sampled during the phase.

/// Current resident set size in KiB; `None` off Linux.
pub fn resident_kib() -> Option<u64> {
    status_field("VmRSS:")
}

/// Peak resident set size in KiB since the process started or the last [`reset_peak`].
pub fn peak_kib() -> Option<u64> {
    status_field("VmHWM:")
}

/// Resets the peak to the current resident size; false when the kernel refuses.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
