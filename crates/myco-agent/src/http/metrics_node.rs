//! The parts of `/metrics` an operator alerts on that are not counters of
//! the core: each job's desired and ready counts as this node sees the
//! mesh (every node reports the same numbers, so alerts take the `max`
//! over nodes), the agent process (memory, CPU, open files, like the
//! `process_*` metrics of other exporters) and the data dir's file system.
//! All in base units (bytes, seconds). The job label is `myco_job`, not
//! `job`: Prometheus sets `job` on every series to the scrape job's name
//! and would rename ours to `exported_job`.

use std::sync::atomic::AtomicU64;

use myco_proto::instance::InstanceState;
use myco_proto::job::JobRecord;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ApiState;
use crate::jobs::workflow::{self, Inputs};

type Labels = Vec<(&'static str, String)>;
type Seconds = Gauge<f64, AtomicU64>;

/// Registers the job, process and disk metrics.
pub fn register(r: &mut Registry, s: &ApiState) {
    jobs(r, &Inputs::read(&s.mesh), |name| {
        workflow::versions(&s.mesh, name).unwrap_or_default()
    });
    process(r);
    disk(r, &s.data_dir);
}

/// Whether the current (last) version brings back the spore of an older
/// version after a different one ran: a rollout was reverted, by hand
/// (`myco job revert`) or by a failed rollout.
pub fn reverted(history: &[JobRecord]) -> bool {
    let [older @ .., prev, cur] = history else {
        return false;
    };
    prev.digest() != cur.digest() && older.iter().any(|o| o.digest() == cur.digest())
}

fn family(r: &mut Registry, name: &str, help: &str, rows: &[(String, i64)]) {
    let f = Family::<Labels, Gauge>::default();
    for (job, v) in rows {
        f.get_or_create(&vec![("myco_job", job.clone())]).set(*v);
    }
    r.register(name, help, f);
}

/// Per-job gauges from the replicated job and instance tables.
pub fn jobs(r: &mut Registry, inputs: &Inputs, history: impl Fn(&str) -> Vec<JobRecord>) {
    let (mut desired, mut ready, mut version, mut restarts, mut back) =
        (vec![], vec![], vec![], vec![], vec![]);
    for rec in &inputs.jobs {
        let name = rec.name().to_string();
        let mine = || {
            inputs
                .instances
                .iter()
                .filter(|i| i.job == name && inputs.is_up(i.node))
        };
        let want = if rec.stopped { 0 } else { rec.spec.count };
        desired.push((name.clone(), i64::from(want)));
        let up = mine().filter(|i| i.state == InstanceState::Ready).count();
        ready.push((name.clone(), up as i64));
        version.push((name.clone(), rec.version as i64));
        let n: u64 = mine().map(|i| u64::from(i.restarts)).sum();
        restarts.push((name.clone(), n as i64));
        back.push((name.clone(), i64::from(reverted(&history(&name)))));
    }
    family(
        r,
        "job_desired_instances",
        "Instances the job asks for (0 when stopped)",
        &desired,
    );
    family(
        r,
        "job_ready_instances",
        "Ready instances of the job on live nodes",
        &ready,
    );
    family(r, "job_version", "The job's current version", &version);
    family(
        r,
        "job_instance_restarts",
        "Restarts of the job's instances on live nodes, summed over their records",
        &restarts,
    );
    family(
        r,
        "job_reverted",
        "1 when the job's current version brought back an older spore after a different one ran (a reverted rollout)",
        &back,
    );
}

/// The agent process, from `/proc/self` (absent where there is none).
fn process(r: &mut Registry) {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
    {
        let g = Gauge::<i64>::default();
        g.set((pages * page) as i64);
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the agent process",
            g,
        );
    }
    if let Some(cpu) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_ticks(&s))
    {
        let g = Seconds::default();
        g.set(cpu as f64 / ticks);
        // A gauge, not a counter: it is read, not counted, here; rate()
        // works on it all the same.
        r.register(
            "process_cpu_seconds",
            "CPU time (user and system) the agent process has used",
            g,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let g = Gauge::<i64>::default();
        g.set(dir.count() as i64);
        r.register(
            "process_open_fds",
            "File descriptors the agent holds open",
            g,
        );
    }
}

/// utime + stime from `/proc/self/stat` (fields 14 and 15, counted after
/// the command name, which may hold spaces, in parentheses).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The file system of the data dir: what the store and spores fill.
fn disk(r: &mut Registry, dir: &std::path::Path) {
    let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
        return;
    };
    // The casts matter on 32-bit targets (a Pi), where these are u32.
    #[allow(clippy::unnecessary_cast)]
    let (unit, blocks, available) = (
        st.fragment_size() as u64,
        st.blocks() as u64,
        st.blocks_available() as u64,
    );
    let (size, free) = (blocks * unit, available * unit);
    let g = Gauge::<i64>::default();
    g.set(size as i64);
    r.register(
        "data_dir_filesystem_size_bytes",
        "Size of the file system holding the data dir",
        g,
    );
    let g = Gauge::<i64>::default();
    g.set(free as i64);
    r.register(
        "data_dir_filesystem_free_bytes",
        "Bytes of the data dir's file system available to the agent",
        g,
    );
}

#[cfg(test)]
mod tests;
