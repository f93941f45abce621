//! The operator side of the jobs simulation: node shapes (zones and
//! capacity) and the jobs, deployed at the start and changed during the
//! safety phase (scale, stop, start, new version). Drawn from a seeded
//! stream of their own.

use std::collections::BTreeMap;
use std::time::Duration;

use myco_core::Time;
use myco_proto::frame::Capacity;
use myco_proto::job::{Constraint, Health, JobRecord, JobSpec, RestartPolicy, Strategy};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The spore every simulated job runs.
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Most slots of one simulated job.
const MAX_COUNT: u32 = 6;

/// Node `i`'s tags and capacity: zones `a`, `b`, `c` in turn, 2 to 4
/// cores, 1 to 2 GiB (`tight`: 1 to 2 cores, 512 MB to 1 GiB).
pub(crate) fn shapes(
    seed: u64,
    nodes: usize,
    tight: bool,
) -> Vec<(BTreeMap<String, String>, Capacity)> {
    let scale = if tight { 2 } else { 1 };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x005b_a9e5);
    (0..nodes)
        .map(|i| {
            let tags = BTreeMap::from([("zone".to_string(), ["a", "b", "c"][i % 3].to_string())]);
            let capacity = Capacity {
                cpu_milli: rng.random_range(4..=8) * 500 / scale,
                memory_mb: u64::from(rng.random_range(4..=8u32) * 256 / scale),
            };
            (tags, capacity)
        })
        .collect()
}

/// The jobs an operator deploys and changes.
pub(crate) struct JobsWorkload {
    rng: StdRng,
    /// The operator's idea of each job (the last record it wrote, or the
    /// revert a node wrote).
    pub(crate) jobs: BTreeMap<String, JobRecord>,
    /// The highest version of each job ever written: a revert brings an
    /// older one back, and the next version is numbered past this.
    top: BTreeMap<String, u64>,
    next: Option<Time>,
    /// Changes made.
    pub(crate) changes: u64,
    /// Probability a new version is broken (env `BROKEN`).
    pub(crate) broken: f64,
    /// Only new versions, no scale or stop.
    pub(crate) versions_only: bool,
    /// Broken versions written.
    pub(crate) broken_written: u64,
}

impl JobsWorkload {
    /// `count` jobs, `j0` to `j{count-1}`, of random shapes.
    pub(crate) fn new(seed: u64, count: usize) -> JobsWorkload {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0010_b50f_5eed);
        let jobs: BTreeMap<String, JobRecord> = (0..count)
            .map(|i| {
                let j = make(&mut rng, &format!("j{i}"));
                (j.name().to_string(), j)
            })
            .collect();
        let top = jobs.iter().map(|(k, j)| (k.clone(), j.version)).collect();
        JobsWorkload {
            rng,
            top,
            jobs,
            next: None,
            changes: 0,
            broken: 0.0,
            versions_only: false,
            broken_written: 0,
        }
    }

    /// Makes every other job (`j0`, `j2`, ...) `duplicates = "never"`.
    /// Draws nothing, so the seeds' streams stay as they were.
    pub(crate) fn never(&mut self) {
        for (i, j) in self.jobs.values_mut().enumerate() {
            if i % 2 == 0 {
                j.spec.duplicates = myco_proto::job::Duplicates::Never;
            }
        }
    }

    /// Changes start `after` from `now`, one every 4 to 12 s.
    pub(crate) fn start_changes(&mut self, now: Time, after: Duration) {
        self.next = Some(now + after);
    }

    pub(crate) fn stop_changes(&mut self) {
        self.next = None;
    }

    /// The change due at `now`, if any: the record to write.
    pub(crate) fn change(&mut self, now: Time, wall_ms: u64) -> Option<JobRecord> {
        if self.next.is_none_or(|t| t > now) {
            return None;
        }
        self.next = Some(now + Duration::from_millis(self.rng.random_range(4_000..=12_000)));
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        let name = &names[self.rng.random_range(0..names.len())];
        let old = self.jobs[name].clone();
        let kind = if self.versions_only {
            3
        } else {
            self.rng.random_range(0..4u32)
        };
        let mut new = match kind {
            // Scale: the same version, another count.
            0 | 1 => {
                let mut j = old.clone();
                j.spec.count = self.rng.random_range(1..=MAX_COUNT);
                j
            }
            // Stop, or start again.
            2 => {
                let mut j = old.clone();
                j.stopped = !j.stopped;
                j
            }
            // A new version (same resources: a found process of an older
            // version is counted at the current size).
            _ => {
                let mut spec = old.spec.clone();
                let top = self.top.get(name).copied().unwrap_or(old.version);
                spec.env.insert("V".into(), format!("{}", top + 1));
                // Drawn only when asked for, so runs without broken
                // versions keep their seeds' streams.
                spec.env.remove("BROKEN");
                if self.broken > 0.0 && self.rng.random_bool(self.broken) {
                    spec.env.insert("BROKEN".into(), "1".into());
                    self.broken_written += 1;
                }
                let mut j = old.next(spec, DIGEST, wall_ms).expect("a digest pins");
                j.version = top + 1;
                j
            }
        };
        let top = self.top.entry(name.clone()).or_default();
        *top = (*top).max(new.version);
        new.updated_ms = wall_ms;
        self.changes += 1;
        self.jobs.insert(name.clone(), new.clone());
        Some(new)
    }
}

/// A job of random count, strategy, size, constraint and health check,
/// restarting fast enough that crash loops and avoidances end within a run.
fn make(rng: &mut StdRng, name: &str) -> JobRecord {
    let text = format!("name = \"{name}\"\nspore = \"{DIGEST}\"");
    let mut spec = JobSpec::from_toml(&text).expect("a valid job");
    spec.count = rng.random_range(1..=MAX_COUNT);
    spec.strategy = if rng.random_bool(0.3) {
        Strategy::Pack
    } else {
        Strategy::Spread
    };
    spec.resources.cpu_milli = rng.random_range(1..=3) * 100;
    spec.resources.memory_mb = rng.random_range(1..=3) * 64;
    match rng.random_range(0..6u32) {
        0 => {
            spec.constraints
                .insert("zone".into(), Constraint::Eq("a".into()));
        }
        1 => {
            spec.constraints
                .insert("zone".into(), Constraint::Ne("c".into()));
        }
        _ => {}
    }
    if rng.random_bool(0.5) {
        spec.health = Some(Health {
            http: Some("/health".into()),
            tcp: false,
            exec: None,
            interval_ms: 500,
            timeout_ms: 200,
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        });
    }
    spec.restart = RestartPolicy {
        attempts: 3,
        interval_ms: 20_000,
        delay_ms: 200,
        backoff: 2,
        max_delay_ms: 2_000,
        jitter_percent: 25,
        avoid_ms: 5_000,
    };
    spec.kill_timeout_ms = 500;
    // Rollouts at the pace of the run: proven in 1 s, failed after 8 s.
    spec.update.min_healthy_ms = 1_000;
    spec.update.healthy_deadline_ms = 8_000;
    JobRecord::first(spec, DIGEST, 0).expect("a digest pins")
}
