//! Carrying out the controller's actions. Each either touches only the
//! executor's maps (and reports back at once) or starts a task whose
//! outcome returns to the loop as a [`Done`]: the loop never waits on a
//! process, a probe or the disk, only on the record writer's bounded queue.

use std::sync::Arc;
use std::time::Duration;

use myco_core::jobs::controller::{JobAction, JobEvent, JobEventKind};
use myco_core::jobs::supervise::ProcessEvent;
use myco_proto::api::ApiEvent;
use myco_proto::instance::{Exit, InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;

use tracing::Instrument;

use super::JobsShared;
use super::runtime::{Done, Runtime};
use crate::exec::executor::{self, SpawnJob};
use crate::spores::index;

impl Runtime {
    /// Drains and carries out every action, then publishes local state.
    pub(super) async fn drain(&mut self) {
        while let Some(action) = self.ctl.poll_action() {
            self.act(action).await;
        }
        while let Some(event) = self.ctl.poll_event() {
            self.tell(event);
        }
        self.publish();
    }

    /// A healing or rollout decision: logged, counted, and published on
    /// `/v1/events`.
    fn tell(&self, e: JobEvent) {
        tracing::info!(job = %e.job, kind = e.kind.as_str(), "{}", e.message);
        if let Some(i) = JobEventKind::ALL.iter().position(|k| *k == e.kind) {
            JobsShared::count(&self.shared.stats.heal_events[i]);
        }
        self.mesh.publish(ApiEvent::Job {
            kind: e.kind.as_str().to_string(),
            job: e.job,
            message: e.message,
        });
    }

    /// Writes the revert the controller asked for, off the loop (it reads
    /// the history and waits for the write to be durable).
    fn revert(&self, job: String, from: u64, to: u64) {
        let (mesh, shared) = (self.mesh.clone(), self.shared.clone());
        tokio::spawn(async move {
            match super::workflow::auto_revert(&mesh, &job, from, to)
                .in_current_span()
                .await
            {
                Ok(true) => {
                    JobsShared::count(&shared.stats.reverts_written);
                    tracing::info!(%job, from, to, "rollout reverted: version {to} is current again");
                }
                Ok(false) => tracing::info!(%job, from, to, "revert not needed: the job moved on"),
                Err(e) => tracing::warn!(%job, from, to, error = %e, "revert failed"),
            }
        });
    }

    /// The span an action on one instance runs in: what it logs, and the
    /// tasks it starts, carry the job and the instance.
    fn span_for(&self, action: &JobAction) -> tracing::Span {
        let of = |id: &str| self.job_of.get(id).cloned().unwrap_or_default();
        let (job, instance) = match action {
            JobAction::Spawn { id, job, .. } => (job.spec.name.clone(), id.as_str()),
            JobAction::Probe { id }
            | JobAction::Kill { id, .. }
            | JobAction::Release { id, .. } => (of(id), id.as_str()),
            JobAction::Write { record } => (record.job.clone(), record.id.as_str()),
            JobAction::Delete { job, id } => (job.clone(), id.as_str()),
            JobAction::Revert { job, .. } => (job.clone(), ""),
        };
        tracing::info_span!("instance", job, instance)
    }

    async fn act(&mut self, action: JobAction) {
        let span = self.span_for(&action);
        self.act_in(action).instrument(span).await
    }

    async fn act_in(&mut self, action: JobAction) {
        match action {
            JobAction::Spawn { id, slot, job } => self.spawn(id, slot, job),
            JobAction::Probe { id } => self.probe(id),
            JobAction::Kill { id, grace } => self.kill(&id, grace),
            JobAction::Release { id, keep_logs } => self.release(&id, keep_logs),
            JobAction::Write { record } => self.write(record).await,
            JobAction::Delete { job, id } => {
                let key = InstanceRecord::key_of(&job, &id);
                self.send_write(key, None).await;
                // A crash-looped instance's kept logs go with its record.
                if !self.exec.holds(&id) && !self.job_of.contains_key(&id) {
                    let data_dir = self.exec.data_dir().to_path_buf();
                    tokio::task::spawn_blocking(move || {
                        executor::cleanup(&data_dir, &id, None, false)
                    });
                }
            }
            JobAction::Revert { job, from, to, .. } => self.revert(job, from, to),
        }
    }

    fn event(&mut self, id: &str, event: ProcessEvent) {
        let now = self.now();
        self.ctl.handle_process_event(now, id, event);
    }

    fn spawn(&mut self, id: String, slot: u32, job: Arc<JobRecord>) {
        if self.spawning.contains_key(&id) {
            tracing::debug!(instance = %id, "spawn asked while one is under way");
            return;
        }
        if self.exec.running(&id).is_some() {
            // Already running (adopted): say so rather than start a twin.
            tracing::warn!(instance = %id, "spawn asked for a running instance");
            self.event(&id, ProcessEvent::Started);
            return;
        }
        let port = match self.exec.port_for(&id) {
            Ok(p) => p,
            Err(e) => {
                JobsShared::count(&self.shared.stats.spawn_failures);
                self.event(&id, ProcessEvent::SpawnFailed(e.to_string()));
                return;
            }
        };
        if !self.spawned.insert(id.clone()) {
            JobsShared::count(&self.shared.stats.restarts);
        }
        JobsShared::count(&self.shared.stats.spawns);
        self.job_of.insert(id.clone(), job.spec.name.clone());
        self.probes.insert(id.clone(), executor::probe_kind(&job));
        self.spawning.insert(id.clone(), None);
        let work = SpawnJob {
            id: id.clone(),
            slot,
            job: job.clone(),
            port,
            node: self.me.to_string(),
            data_dir: self.exec.data_dir().to_path_buf(),
            cgroups: self.exec.cgroups().clone(),
            trusted: index::trusted(&self.mesh),
            limits: *self.spores.store().limits(),
            microvm: self.exec.microvm().clone(),
            guard: self.guard.clone(),
        };
        let (spores, done) = (self.spores.clone(), self.done.clone());
        tokio::spawn(
            async move {
                let result = async {
                    let path = spores
                        .open(job.digest())
                        .await
                        .map_err(|e| format!("spore {}: {e}", job.digest()))?;
                    let span = tracing::Span::current();
                    tokio::task::spawn_blocking(move || span.in_scope(|| work.run(&path)))
                        .await
                        .map_err(|e| format!("spawn task failed: {e}"))?
                        .map(Box::new)
                        .map_err(|e| e.to_string())
                }
                .await;
                let _ = done.send(Done::Spawned { id, job, result }).await;
            }
            .in_current_span(),
        );
    }

    /// A spawn finished: the process is watched, its address set, and the
    /// controller told; a kill that came meanwhile is carried out now.
    pub(super) async fn on_done(&mut self, done: Done) {
        let (job, instance) = match &done {
            Done::Spawned { id, job, .. } => (job.spec.name.clone(), id.clone()),
            Done::Probed { id, .. } => {
                (self.job_of.get(id).cloned().unwrap_or_default(), id.clone())
            }
        };
        let span = tracing::info_span!("instance", job, instance);
        self.on_done_in(done).instrument(span).await
    }

    async fn on_done_in(&mut self, done: Done) {
        match done {
            Done::Spawned { id, job, result } => {
                let kill = self.spawning.remove(&id).flatten();
                match result {
                    Ok(launched) => {
                        let child = self.exec.started(&job.spec.name, *launched);
                        self.exits.watch_child(id.clone(), child);
                        let addr = self.exec.addr_of(&id);
                        if let Some(addr) = addr {
                            self.ctl.set_addr(&id, addr);
                        }
                        // In the instance's span: job and instance ride along.
                        tracing::info!(addr = ?addr, "instance started");
                        self.event(&id, ProcessEvent::Started);
                        if let Some(grace) = kill {
                            self.kill(&id, grace);
                        }
                    }
                    Err(why) => {
                        tracing::warn!(instance = %id, error = %why, "instance did not start");
                        JobsShared::count(&self.shared.stats.spawn_failures);
                        if kill.is_some() {
                            // It was being stopped: nothing runs, which is
                            // what the kill waits to hear.
                            self.event(&id, ProcessEvent::Exited(Exit::Code(-1)));
                        } else {
                            self.event(&id, ProcessEvent::SpawnFailed(why));
                        }
                    }
                }
            }
            Done::Probed { id, result } => {
                let event = match result {
                    Ok(()) => ProcessEvent::ProbeOk,
                    Err(why) => ProcessEvent::ProbeFailed(why),
                };
                self.event(&id, event);
            }
        }
    }

    fn probe(&mut self, id: String) {
        let kind = match self.probes.get(&id) {
            Some(k) => k.clone(),
            // Adopted: the health check of its job's current record.
            None => self
                .job_of
                .get(&id)
                .and_then(|job| self.jobs.get(job))
                .and_then(|j| executor::probe_kind(j)),
        };
        let Some((kind, timeout)) = kind else {
            // No health check: a running instance counts as healthy.
            self.event(&id, ProcessEvent::ProbeOk);
            return;
        };
        let Some((prober, port, dir)) = self.exec.probe_of(&id) else {
            self.event(&id, ProcessEvent::ProbeFailed("not running".into()));
            return;
        };
        let done = self.done.clone();
        tokio::spawn(
            async move {
                let result = executor::run_probe(prober, kind, timeout, port, dir).await;
                let _ = done.send(Done::Probed { id, result }).await;
            }
            .in_current_span(),
        );
    }

    /// SIGTERM, SIGKILL after `grace`; the exit comes back through the
    /// exit watcher like any other.
    fn kill(&mut self, id: &str, grace: Duration) {
        if let Some(pending) = self.spawning.get_mut(id) {
            *pending = Some(grace);
            return;
        }
        let Some(running) = self.exec.running(id).cloned() else {
            // Nothing runs: tell the controller it is gone.
            self.event(id, ProcessEvent::Exited(Exit::Code(-1)));
            return;
        };
        let id = id.to_owned();
        tokio::spawn(
            async move {
                let outcome = executor::stop(&running, grace).await;
                tracing::debug!(instance = %id, ?outcome, "instance stopped");
            }
            .in_current_span(),
        );
    }

    /// The controller forgot the instance: port back to the pool, cgroup
    /// and directory removed (off the loop), but for its logs when
    /// `keep_logs` (it crash-looped, and stays listed as failed).
    fn release(&mut self, id: &str, keep_logs: bool) {
        self.probes.remove(id);
        self.job_of.remove(id);
        self.spawned.remove(id);
        self.refused.remove(id);
        let (running, cgroup) = self.exec.release(id);
        let data_dir = self.exec.data_dir().to_path_buf();
        let id = id.to_owned();
        tokio::spawn(
            async move {
                if let Some(r) = &running {
                    tracing::warn!(instance = %id, "released while running: stopping it");
                    executor::stop(r, Duration::ZERO).await;
                }
                let _ = tokio::task::spawn_blocking(move || {
                    executor::cleanup(&data_dir, &id, cgroup.as_ref(), keep_logs)
                })
                .await;
            }
            .in_current_span(),
        );
    }

    async fn write(&mut self, record: InstanceRecord) {
        // A `failed` record for an instance this node never spawned is a
        // refusal (its own capacity), counted once per instance.
        if record.node == self.me
            && record.state == InstanceState::Failed
            && !self.spawned.contains(&record.id)
            && self.refused.insert(record.id.clone())
        {
            JobsShared::count(&self.shared.stats.refusals);
        }
        self.send_write(record.key(), Some(record.encode())).await;
    }

    async fn send_write(&mut self, key: String, value: Option<Vec<u8>>) {
        if self.writes.send((key, value)).await.is_err() {
            tracing::error!("the record writer stopped; instance records are not written");
        }
    }
}
