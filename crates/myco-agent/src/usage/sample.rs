//! This node's own CPU and memory use, read from procfs: the host-wide
//! busy share of `/proc/stat` between two readings, and used memory as
//! `MemTotal - MemAvailable` of `/proc/meminfo`. Reading procfs writes
//! nothing, so sampling every few seconds costs no disk.

use myco_proto::api::NodeUsage;

/// CPU time counters of the first line of `/proc/stat` (in ticks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Every tick counted.
    pub total: u64,
    /// Ticks idle or waiting for I/O.
    pub idle: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat`.
pub fn parse_cpu(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if f.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is counted in user already, so it is left out.
    let total = f.iter().take(8).sum();
    let idle = f[3] + f.get(4).copied().unwrap_or(0);
    Some(CpuTimes { total, idle })
}

/// `(total, available)` bytes from `/proc/meminfo`.
pub fn parse_mem(meminfo: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some((kib("MemTotal:")? * 1024, kib("MemAvailable:")? * 1024))
}

/// The share of CPU busy between two readings, in thousandths of a core
/// over `cpus` cores, and in percent of the whole machine.
pub fn busy(before: CpuTimes, after: CpuTimes, cpus: u64) -> (u64, u32) {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return (0, 0);
    }
    let idle = after.idle.saturating_sub(before.idle).min(total);
    let busy = total - idle;
    let milli = busy * cpus * 1000 / total;
    let percent = (busy * 100 / total) as u32;
    (milli, percent)
}

/// Resident memory of this agent process, in bytes.
fn agent_rss() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// Takes readings; the CPU share is over the time since the last one.
pub struct Sampler {
    last: Option<CpuTimes>,
    cpus: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler for this machine.
    pub fn new() -> Sampler {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Sampler { last: None, cpus }
    }

    /// Reads procfs now. The first reading has no CPU share yet (0).
    pub fn sample(&mut self) -> NodeUsage {
        let now = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_cpu(&s));
        let (cpu_milli, cpu_percent) = match (self.last, now) {
            (Some(a), Some(b)) => busy(a, b, self.cpus),
            _ => (0, 0),
        };
        if now.is_some() {
            self.last = now;
        }
        let (total, avail) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_mem(&s))
            .unwrap_or((0, 0));
        NodeUsage {
            cpu_milli,
            cpu_percent,
            mem_bytes: total.saturating_sub(avail),
            mem_total_bytes: total,
            agent_rss_bytes: agent_rss(),
            age_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_share_is_the_busy_part_of_the_ticks_between_readings() {
        let a = parse_cpu("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                idle: 800
            }
        );
        // 1000 more ticks, 250 of them idle or iowait: 75 % of 4 cores.
        let b = parse_cpu("cpu  600 0 350 1000 50 0 0 0 0 0\n").unwrap();
        assert_eq!(busy(a, b, 4), (3000, 75));
        assert_eq!(busy(b, b, 4), (0, 0), "no ticks between: nothing to say");
        assert_eq!(parse_cpu("intr 1 2 3"), None);
    }

    #[test]
    fn used_memory_is_total_less_available() {
        let m = "MemTotal:       2048 kB\nMemFree:  100 kB\nMemAvailable:   1024 kB\n";
        assert_eq!(parse_mem(m), Some((2048 * 1024, 1024 * 1024)));
        assert_eq!(parse_mem("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn this_machine_reports_memory_in_use() {
        let mut s = Sampler::new();
        let u = s.sample();
        assert!(u.mem_total_bytes > 0 && u.mem_bytes > 0 && u.mem_bytes <= u.mem_total_bytes);
        assert!(u.agent_rss_bytes > 1 << 20, "{u:?}");
        assert!(s.sample().cpu_percent <= 100);
    }
}
