//! The `/proc` memory probe: what a process holds, as the kernel reports it.

use std::io;

/// A figure from `/proc/<pid>/status` in KiB: `VmRSS` (resident now) or `VmHWM` (the
/// resident peak).
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))?;
    value
        .split_whitespace()
        .next()
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unreadable {field} in /proc/{pid}/status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size_and_a_peak() {
        let rss = status_kib(std::process::id(), "VmRSS").unwrap();
        let peak = status_kib(std::process::id(), "VmHWM").unwrap();
        assert!(rss > 0 && peak >= rss);
        assert!(status_kib(std::process::id(), "NoSuchField").is_err());
    }
}
