//! The runtime task: one loop that owns the [`Controller`] and drives it
//! the way quinn's shell drives quinn-proto.
//!
//! Inputs, one at a time: a change of the `jobs` or `instances` table or
//! of membership (events from the mesh, coalesced for [`COALESCE`] so a
//! burst makes one view), a manifest arriving (seen by comparing a
//! membership fingerprint every [`MEMBERSHIP_POLL`], since it raises no
//! event), a process exit, a finished spawn or probe, and the controller's
//! own timeout. After each, every action is drained and carried out
//! (`jobs/act.rs`): slow work in tasks that report back on one bounded
//! channel, record writes through the ordered writer.
//!
//! At start it scans `DATA_DIR/instances` for processes that survived the
//! previous agent (pid, start time and boot id must all match), adopts
//! them, and tells the controller with `set_local_scan` before anything
//! else; after a reboot nothing matches and the controller starts the
//! instances again from the node's own replica, peers or not.
//!
//! Stopping the runtime (the agent shutting down) leaves instances
//! running: the next agent adopts them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use myco_core::Time;
use myco_core::jobs::controller::{Controller, ControllerConfig};
use myco_proto::NodeId;
use myco_proto::Table;
use myco_proto::job::JobRecord;
use myco_proto::node_mark::NodeMark;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::view::{self, membership_fingerprint};
use super::writer::{self, RecordWrite};
use super::{JobsConfig, JobsShared, LocalInstance};
use crate::exec::executor::Executor;
use crate::exec::fence_guard::{self, FenceGuard};
use crate::exec::process::Exit as ProcExit;
use crate::exec::{CgroupSupport, Exits, Launched, ProbeKind};
use crate::mesh::{Clock, MeshHandle};
use crate::spores::Spores;

/// How long a burst of changes is gathered before the view is rebuilt.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How often membership is compared for manifests that arrived.
pub const MEMBERSHIP_POLL: Duration = Duration::from_secs(1);
/// How often instance logs are checked for rotation (a `stat` each).
pub const ROTATE_EVERY: Duration = Duration::from_secs(10);
/// Outcomes of spawns, probes and stops not yet taken by the loop.
const DONE_QUEUE: usize = 1024;
/// Exits not yet taken by the loop.
const EXIT_QUEUE: usize = 1024;

/// What the runtime needs from the agent.
pub struct RuntimeParts {
    /// The mesh.
    pub mesh: MeshHandle,
    /// The spore workflows (open a spore, fetching it from peers).
    pub spores: Arc<Spores>,
    /// The agent's data dir.
    pub data_dir: PathBuf,
    /// Ports, cgroups, logs, settle.
    pub config: JobsConfig,
}

/// A running jobs runtime.
pub struct JobsRuntime {
    /// What the API reads.
    pub shared: Arc<JobsShared>,
    task: JoinHandle<()>,
    /// Renews the fence guards' lease while the runtime runs.
    lease: Option<JoinHandle<()>>,
    /// Asks the loop to hand off; answered when it is over.
    leave: mpsc::Sender<oneshot::Sender<()>>,
    handoff: Duration,
}

impl JobsRuntime {
    /// A graceful leave's first step: waits until every local instance's
    /// slot is ready on another node and the instance stopped, or the
    /// hand-off bound ran out and every instance was stopped. With a zero
    /// bound, does nothing: instances run on for the next agent.
    pub async fn hand_off(&self) {
        if self.handoff.is_zero() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.leave.send(tx).await.is_err() {
            return;
        }
        // The loop answers by the bound plus the stop's kill timeouts; this
        // only guards against a loop that died.
        let _ = tokio::time::timeout(self.handoff + Duration::from_secs(30), rx).await;
    }

    /// The hand-off bound (`MYCO_HANDOFF_MS`; zero: no hand-off).
    pub fn handoff_bound(&self) -> Duration {
        self.handoff
    }

    /// Stops the runtime's loop. Instances run on, for the next agent to
    /// adopt.
    pub fn stop(&self) {
        self.task.abort();
        // The guards of `never` instances kill them unless a new agent
        // renews the lease within the fence time.
        if let Some(lease) = &self.lease {
            lease.abort();
        }
    }

    /// Waits for the loop to end (after [`JobsRuntime::stop`]).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// The outcome of work done off the loop.
pub(super) enum Done {
    /// A spawn finished.
    Spawned {
        id: String,
        job: Arc<JobRecord>,
        result: Result<Box<Launched>, String>,
    },
    /// A probe finished.
    Probed {
        id: String,
        result: Result<(), String>,
    },
}

/// The loop's state.
pub(super) struct Runtime {
    pub(super) mesh: MeshHandle,
    pub(super) spores: Arc<Spores>,
    pub(super) shared: Arc<JobsShared>,
    pub(super) ctl: Controller,
    pub(super) exec: Executor,
    pub(super) exits: Exits,
    pub(super) clock: Clock,
    pub(super) me: NodeId,
    pub(super) done: mpsc::Sender<Done>,
    pub(super) writes: mpsc::Sender<RecordWrite>,
    /// The current record of each job, by name (probes of adopted
    /// instances read their health check from it).
    pub(super) jobs: BTreeMap<String, Arc<JobRecord>>,
    /// Job name per local instance, from its spawn or adoption to release.
    pub(super) job_of: BTreeMap<String, String>,
    /// Probe per local instance, from the version it was spawned with.
    pub(super) probes: BTreeMap<String, Option<(ProbeKind, Duration)>>,
    /// The fence guard `never` instances run under (exec::fence_guard).
    pub(super) guard: Option<FenceGuard>,
    /// Spawns under way, and whether a kill came meanwhile.
    pub(super) spawning: BTreeMap<String, Option<Duration>>,
    /// Instances spawned at least once since this runtime started.
    pub(super) spawned: BTreeSet<String>,
    /// Instances counted as refused.
    pub(super) refused: BTreeSet<String>,
    /// Directories of instances that did not survive the last agent (or
    /// the machine): removed once the controller has had time to start
    /// them again in place (`survivors::sweep_after`) and did not.
    pub(super) dead: BTreeSet<String>,
}

/// Detects cgroups, then starts the runtime's task.
pub async fn start(parts: RuntimeParts) -> JobsRuntime {
    let cg_config = parts.config.cgroups.clone();
    let cgroups = tokio::task::spawn_blocking(move || CgroupSupport::detect(&cg_config))
        .await
        .unwrap_or_else(|e| CgroupSupport::none(format!("detection failed: {e}")));
    if cgroups.is_usable() {
        tracing::info!(version = ?cgroups.version, limits = ?cgroups.limits, "cgroups for instances");
    } else {
        tracing::warn!(reason = %cgroups.reason, "no usable cgroups: instances run without limits");
    }
    let cgroups = Arc::new(cgroups);
    let shared = JobsShared::new(cgroups.clone());
    let handoff = parts.config.handoff;
    let (leave, leave_rx) = mpsc::channel(1);
    let lease = fence_guard::Lease::take_over(&parts.data_dir, parts.config.fence);
    let guard = (lease.guard.clone(), lease.inherited);
    let lease = lease.task;
    let task = tokio::spawn(run(parts, shared.clone(), cgroups, leave_rx, guard));
    JobsRuntime {
        shared,
        task,
        lease,
        leave,
        handoff,
    }
}

async fn run(
    parts: RuntimeParts,
    shared: Arc<JobsShared>,
    cgroups: Arc<CgroupSupport>,
    mut leave_rx: mpsc::Receiver<oneshot::Sender<()>>,
    (guard, inherited): (Option<FenceGuard>, Option<Duration>),
) {
    let RuntimeParts {
        mesh,
        spores,
        data_dir,
        config,
    } = parts;
    let snap = mesh.snapshot();
    let me = snap.me;
    let capacity = snap
        .members
        .iter()
        .find(|m| m.is_self)
        .and_then(|m| m.manifest.as_ref())
        .map(|man| view::capacity_of(&man.capacity))
        .unwrap_or_else(|| view::capacity_of(&crate::config::sysinfo::detect()));
    let seed = u64::from_le_bytes(crate::config::datadir::random_bytes::<8>());
    let ctl = Controller::new(
        me.id,
        capacity,
        ControllerConfig {
            settle: config.settle,
            state_settle: myco_core::jobs::reconcile::DEFAULT_STATE_SETTLE,
            seed,
            drain: config.drain,
            fence: myco_core::jobs::fence::FenceConfig {
                fence: config.fence,
                ..Default::default()
            },
        },
    );
    let (done_tx, mut done_rx) = mpsc::channel(DONE_QUEUE);
    let mut events = mesh.subscribe();
    let mut rt = Runtime {
        writes: writer::start(mesh.clone(), shared.clone()),
        mesh,
        spores,
        shared,
        ctl,
        exec: Executor::new(data_dir, cgroups, me.addr.ip(), config.ports.clone())
            .with_microvm(config.microvm.clone()),
        exits: Exits::new(EXIT_QUEUE),
        clock: Clock::start(),
        me: me.id,
        done: done_tx,
        jobs: BTreeMap::new(),
        job_of: BTreeMap::new(),
        probes: BTreeMap::new(),
        spawning: BTreeMap::new(),
        spawned: BTreeSet::new(),
        refused: BTreeSet::new(),
        dead: BTreeSet::new(),
        guard,
    };
    if let Some(left) = inherited.filter(|d| !d.is_zero()) {
        let now = rt.now();
        rt.ctl.hold_fence_until(now + left);
    }
    // The view first: an adopted instance's record is rebuilt from what
    // this node wrote before (digest, restarts) and its job's record; the
    // controller does nothing before the scan anyway.
    rt.rebuild_view();
    rt.adopt_survivors().await;
    rt.drain().await;

    let mut fingerprint = membership_fingerprint(&rt.mesh.snapshot());
    let mut membership = tokio::time::interval(MEMBERSHIP_POLL);
    let mut rotate = tokio::time::interval(ROTATE_EVERY);
    let sweep = tokio::time::sleep(super::survivors::sweep_after(config.settle));
    tokio::pin!(sweep);
    let mut swept = false;
    let mut dirty_since: Option<Instant> = None;
    // A hand-off under way: its deadline, whether it ran out, the answer.
    let mut leaving: Option<(Instant, bool, oneshot::Sender<()>)> = None;
    let handoff = config.handoff;
    loop {
        let deadline = leaving.as_ref().filter(|l| !l.1).map(|l| l.0);
        let timeout = rt
            .ctl
            .poll_timeout()
            .map(|t| Instant::from_std(rt.clock.instant(t)));
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            event = events.recv() => match event {
                // A death moves slots: build the view now, not after the
                // burst window (the failover's path; anything else that
                // came with it is in the same view).
                Ok(e) if view::is_departure(&e) => {
                    dirty_since = Some(Instant::now().checked_sub(COALESCE).unwrap_or_else(Instant::now));
                }
                Ok(e) if view::concerns_view(&e) => { dirty_since.get_or_insert_with(Instant::now); }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => { dirty_since.get_or_insert_with(Instant::now); }
                Err(broadcast::error::RecvError::Closed) => {
                    tracing::info!("the mesh stopped; the jobs runtime stops (instances run on)");
                    return;
                }
            },
            exit = rt.exits.next() => rt.on_exit(exit),
            Some(done) = done_rx.recv() => rt.on_done(done).await,
            _ = tokio::time::sleep_until(timeout.unwrap_or(far)), if timeout.is_some() => {
                let now = rt.now();
                rt.ctl.handle_timeout(now);
            }
            _ = tokio::time::sleep_until(dirty_since.map_or(far, |t| t + COALESCE)), if dirty_since.is_some() => {
                dirty_since = None;
                rt.rebuild_view();
            }
            _ = membership.tick() => {
                let now = membership_fingerprint(&rt.mesh.snapshot());
                if now != fingerprint {
                    fingerprint = now;
                    dirty_since.get_or_insert_with(Instant::now);
                }
            }
            _ = rotate.tick() => rt.rotate_logs(config.logs),
            Some(done) = leave_rx.recv(), if leaving.is_none() => {
                tracing::info!(bound = ?handoff, "handing off: waiting for replacements elsewhere");
                rt.write_draining_mark().await;
                let now = rt.now();
                rt.ctl.hand_off(now, handoff);
                leaving = Some((Instant::now() + handoff, false, done));
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                tracing::warn!("hand-off bound reached: stopping the instances left");
                let now = rt.now();
                rt.ctl.stop_all(now);
                if let Some(l) = leaving.as_mut() {
                    l.1 = true;
                }
            }
            _ = &mut sweep, if !swept => {
                swept = true;
                rt.sweep_dead();
            }
        }
        rt.drain().await;
        if leaving.as_ref().is_some_and(|l| !l.2.is_closed()) && rt.ctl.handed_off() {
            tracing::info!("hand-off done: nothing runs here");
            if let Some((_, _, done)) = leaving.take() {
                let _ = done.send(());
            }
        }
    }
}

impl Runtime {
    pub(super) fn now(&self) -> Time {
        self.clock.now()
    }

    /// Marks this life of the node draining in `Table::NODES`: placement
    /// on every node stops choosing it, and peers handing off at the same
    /// time stop waiting for it to take their slots.
    async fn write_draining_mark(&self) {
        let snap = self.mesh.snapshot();
        let Some(me) = snap.members.iter().find(|m| m.is_self) else {
            return;
        };
        let mark = NodeMark::draining(me.peer.boot, self.now().0);
        let key = NodeMark::key(me.peer.id);
        if let Err(e) = self
            .mesh
            .write(Table::NODES, &key, Some(mark.encode()))
            .await
        {
            tracing::warn!(error = %e, "could not mark this node draining: peers may wait for it");
        }
    }

    /// Rebuilds the view from what the mesh published and runs a pass.
    pub(super) fn rebuild_view(&mut self) {
        let now = self.now();
        let (view, skipped) = view::build(&self.mesh, now.0);
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "undecodable job, instance or node records ignored (a newer release wrote them?)"
            );
        }
        self.jobs = view
            .jobs
            .iter()
            .map(|j| (j.spec.name.clone(), Arc::new(j.clone())))
            .collect();
        self.ctl.set_view(now, view);
    }

    fn on_exit(&mut self, exit: ProcExit) {
        let Some(gone) = self.exec.exited(&exit.instance, exit.pid) else {
            tracing::debug!(instance = %exit.instance, pid = exit.pid, "stale exit ignored");
            return;
        };
        tracing::info!(instance = %exit.instance, pid = exit.pid, how = ?exit.kind, "instance exited");
        // The leader is gone; nothing else of the instance may run on.
        tokio::spawn(async move {
            crate::exec::executor::stop(&gone, Duration::ZERO).await;
        });
        let now = self.now();
        self.ctl.handle_process_event(
            now,
            &exit.instance,
            myco_core::jobs::supervise::ProcessEvent::Exited(crate::exec::executor::exit_of(
                exit.kind,
            )),
        );
    }

    fn rotate_logs(&self, limits: crate::exec::LogLimits) {
        let dirs: Vec<PathBuf> = self
            .exec
            .running_ids()
            .iter()
            .filter_map(|id| self.exec.running(id).map(|r| r.dir.clone()))
            .collect();
        if dirs.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            for dir in dirs {
                if let Err(e) = crate::exec::logs::rotate_if_needed(&dir, &limits) {
                    tracing::debug!(dir = %dir.display(), error = %e, "log rotation failed");
                }
            }
        });
    }

    /// Publishes the local instances for the API.
    pub(super) fn publish(&self) {
        let local = self
            .ctl
            .local()
            .map(|(id, state)| {
                let info = LocalInstance {
                    job: self.job_of.get(id).cloned().unwrap_or_default(),
                    state,
                    pid: self.exec.running(id).map(|r| r.pid),
                };
                (id.to_owned(), info)
            })
            .collect();
        self.shared.publish(local);
    }
}
