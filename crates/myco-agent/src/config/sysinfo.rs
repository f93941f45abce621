//! Capacity detection: what this machine can offer to workloads, honouring
//! cgroup limits (v2, then v1) when the agent itself runs inside one.

use std::fs;

use myco_proto::Capacity;

/// Detects CPU (from the scheduler's view, which counts cgroup quotas) and
/// memory (the smaller of MemTotal and any cgroup memory limit).
pub fn detect() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mem_total = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| mem_total_kib(&s))
        .map(|kib| kib * 1024);
    let limits = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ];
    let cgroup = limits
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .find_map(|s| s.trim().parse::<u64>().ok());
    let bytes = match (mem_total, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 0,
    };
    Capacity {
        cpu_milli: cpus * 1000,
        memory_mb: bytes / (1024 * 1024),
    }
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memtotal() {
        assert_eq!(
            mem_total_kib("MemFree: 1 kB\nMemTotal:       16384 kB\n"),
            Some(16384)
        );
        assert_eq!(mem_total_kib("nothing"), None);
    }

    #[test]
    fn detects_something_on_this_machine() {
        let c = detect();
        assert!(c.cpu_milli >= 1000);
        assert!(c.memory_mb > 0);
    }
}
