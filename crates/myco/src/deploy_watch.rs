//! `myco deploy` on a terminal (or with `--watch`): progress until every
//! instance of the new version is ready and no older one serves, a slot
//! stays pending, an instance is in a crash loop, or the rollout failed
//! and the job went back to the version before (an error: the exit code
//! says the deploy did not take). On a terminal a summary line and a bar
//! per slot are redrawn in place (`deploy_slots`); otherwise one line is
//! printed per step.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use myco_client::Client;
use myco_proto::jobs_api::{InstanceInfo, JobInfo};

/// How often the job is read while waiting.
const POLL: Duration = Duration::from_millis(250);

/// How long a slot may stay pending before the deploy says so: placement
/// waits for the view to settle (1.5 s) before anything starts.
const PENDING_GRACE: Duration = Duration::from_secs(5);

/// What the current version's instances are doing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Progress {
    ready: u32,
    launching: u32,
    failed: u32,
    /// A failed instance that used up its restarts: `(id, reason)`.
    crash_loop: Option<(String, String)>,
    /// Instances of other versions still ready or draining (a rollout
    /// replaces them one step at a time).
    old: u32,
}

fn progress(job: &JobInfo, instances: &[InstanceInfo]) -> Progress {
    let mut p = Progress::default();
    let attempts = job.spec.restart.attempts;
    p.old = instances
        .iter()
        .filter(|i| i.version != job.version && matches!(i.state.as_str(), "ready" | "draining"))
        .count() as u32;
    for i in instances.iter().filter(|i| i.version == job.version) {
        match i.state.as_str() {
            "ready" => p.ready += 1,
            "launching" => p.launching += 1,
            "failed" => {
                p.failed += 1;
                if i.restarts >= attempts && p.crash_loop.is_none() {
                    p.crash_loop = Some((i.id.clone(), i.reason.clone()));
                }
            }
            _ => {}
        }
    }
    p
}

/// Why a rollout of `version` failed, from its instances' records.
fn failure_of(version: u64, instances: &[InstanceInfo]) -> String {
    instances
        .iter()
        .find(|i| i.version == version && !i.reason.is_empty())
        .map(|i| format!("instance {}: {}", i.id, i.reason))
        .unwrap_or_else(|| "a new instance did not become healthy in time".into())
}

/// Waits until `job`'s current version is ready, printing progress: bars
/// per slot (`lines` false, a terminal) or one line per step.
pub fn watch(c: &Client, job: &JobInfo, limit: Duration, lines: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    // Not locked for the whole watch: the bars draw to stdout too.
    let mut out = std::io::stdout();
    let mut pending_since: Option<Instant> = None;
    let mut last: Option<(u32, u32, u32, u32)> = None;
    let mut bars = (!lines).then(crate::deploy_slots::SlotBars::new);
    // The bars stay on screen however the watch ends.
    let result = (|| -> anyhow::Result<()> {
        loop {
            let now = c.job(&job.name)?;
            if now.version != job.version {
                writeln!(out)?;
                // An older spec came back: the rollout failed and reverted.
                let instances = c.instances(Some(&job.name))?;
                if now.version < job.version {
                    bail!(
                        "rollout of {} version {} failed ({}); reverted to version {}",
                        job.name,
                        job.version,
                        failure_of(job.version, &instances),
                        now.version
                    );
                }
                bail!(
                    "job {} moved on to version {} while waiting (another deploy?)",
                    job.name,
                    now.version
                );
            }
            let instances = c.instances(Some(&job.name))?;
            let p = progress(&now, &instances);
            let step = (p.ready, p.launching, p.failed, p.old);
            let line = format!(
                "{}: {}/{} ready, {} launching, {} failed, {} old  ({:.1}s)",
                job.name,
                p.ready,
                now.desired,
                p.launching,
                p.failed,
                p.old,
                start.elapsed().as_secs_f64()
            );
            if let Some(bars) = &mut bars {
                bars.update(&line, &crate::deploy_slots::slots(&now, &instances));
            } else if last != Some(step) {
                writeln!(out, "{line}")?;
            }
            last = Some(step);
            out.flush()?;
            if p.ready >= now.desired && p.old == 0 {
                writeln!(out, "all {} instances ready", now.desired)?;
                return Ok(());
            }
            if let Some((id, reason)) = p.crash_loop {
                writeln!(out)?;
                bail!(
                    "instance {id} keeps failing: {reason}; see `myco logs {} --instance {id}`",
                    job.name
                );
            }
            match (now.pending.first(), pending_since) {
                (Some(slot), Some(t)) if t.elapsed() >= PENDING_GRACE => {
                    writeln!(out)?;
                    bail!(
                        "slot {} of job {} cannot be placed: {}",
                        slot.slot,
                        job.name,
                        slot.reason
                    );
                }
                (Some(_), None) => pending_since = Some(Instant::now()),
                (None, _) => pending_since = None,
                _ => {}
            }
            if start.elapsed() >= limit {
                writeln!(out)?;
                bail!(
                    "not all instances ready after {}s; `myco job show {}` says why",
                    limit.as_secs(),
                    job.name
                );
            }
            std::thread::sleep(POLL);
        }
    })();
    if let Some(bars) = &bars {
        bars.finish();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(version: u64, state: &str, restarts: u32) -> InstanceInfo {
        InstanceInfo {
            id: format!("web-{restarts}-v{version}"),
            job: "web".into(),
            node: "n".into(),
            node_name: "n1".into(),
            node_state: "alive".into(),
            state: state.into(),
            addr: String::new(),
            digest: String::new(),
            restarts,
            reason: "exit code 3".into(),
            version,
            slot: 0,
            last_exit: None,
            since_ms: 0,
        }
    }

    fn job(version: u64) -> JobInfo {
        let spec = myco_proto::job::JobSpec::from_json(br#"{"name":"web","spore":"a@1"}"#).unwrap();
        JobInfo {
            name: "web".into(),
            version,
            spore: String::new(),
            spore_ref: String::new(),
            stopped: false,
            desired: 2,
            count: 2,
            running: 0,
            ready: 0,
            pending: Vec::new(),
            created_ms: 0,
            updated_ms: 0,
            spec,
            duplicates: "allowed".into(),
            rollout: None,
        }
    }

    #[test]
    fn only_the_new_versions_instances_count() {
        let p = progress(
            &job(2),
            &[
                instance(1, "ready", 0),
                instance(2, "ready", 0),
                instance(2, "launching", 0),
            ],
        );
        assert_eq!((p.ready, p.launching, p.failed, p.old), (1, 1, 0, 1));
        assert_eq!(p.crash_loop, None);
    }

    #[test]
    fn a_revert_names_the_failing_instance() {
        let mut bad = instance(3, "failed", 1);
        bad.reason = "not healthy within 6 s".into();
        let why = failure_of(3, &[instance(2, "ready", 0), bad]);
        assert_eq!(why, "instance web-1-v3: not healthy within 6 s");
    }

    #[test]
    fn a_failed_instance_out_of_restarts_is_a_crash_loop() {
        let attempts = job(1).spec.restart.attempts;
        let p = progress(&job(1), &[instance(1, "failed", attempts - 1)]);
        assert_eq!((p.failed, p.crash_loop.is_some()), (1, false));
        let p = progress(&job(1), &[instance(1, "failed", attempts)]);
        assert_eq!(p.crash_loop.map(|c| c.1), Some("exit code 3".to_string()));
    }
}
