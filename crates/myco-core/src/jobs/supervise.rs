//! Supervision policy for one instance: a small state machine fed the
//! process's events and the passage of time, answering with what to do.
//! The shell (`myco-agent`'s `exec`) runs the process and the probes; this
//! decides when to probe, when the instance is `ready`, when to restart
//! (exponential backoff with jitter), and when to give up.
//!
//! Driving it, in the manner of the node:
//! - [`Supervisor::new`] (a new instance; then [`SuperviseAction::Spawn`]
//!   comes out) or [`Supervisor::adopt`] (a process found running after an
//!   agent restart: it keeps its state, probes resume);
//! - [`Supervisor::handle_event`] with what the process did
//!   ([`ProcessEvent`]), [`Supervisor::handle_timeout`] when
//!   [`Supervisor::poll_timeout`] is due, [`Supervisor::stop`] to end it;
//! - [`Supervisor::poll_action`] until `None` after each call.
//!
//! The rules:
//! - `ready` only after `healthy_threshold` probes in a row succeed (at
//!   once without a health check). While launching, probes run every
//!   `min(interval, 1 s)` so a fast starter is ready fast; failures then
//!   do not count, but an instance not healthy within `healthy_deadline_ms`
//!   has failed. Once ready, probes run every `interval_ms`, and
//!   `unhealthy_threshold` failures in a row fail it (it is killed).
//! - Each failure (an exit, or a kill for being unhealthy) is counted in a
//!   window of `restart.interval_ms`. Within `restart.attempts` failures it
//!   restarts after `delay_ms * backoff^(failures-1)` (at most `max_delay_ms`),
//!   moved by up to `jitter_percent` either way. One more is a crash loop:
//!   state `failed`, reason saying so, and [`SuperviseAction::GiveUp`]: the
//!   node releases the slot and records `avoid_until_ms`, so placement on
//!   every node moves it elsewhere.

use std::collections::VecDeque;
use std::time::Duration;

use myco_proto::instance::{Exit, InstanceState};
use myco_proto::job::{JobSpec, RestartPolicy};

use crate::time::Time;

/// Longest wait between probes of a launching instance.
const LAUNCH_PROBE_EVERY: Duration = Duration::from_secs(1);

/// The first probe of a launching instance, after its start; each next
/// one waits a quarter longer again, up to the interval (or a second). A
/// workload that starts in 100 ms is ready in about 120 ms, not at the
/// first full interval; one that takes longer is seen ready at most a
/// quarter of its start time late (a failover waits for this: the
/// replacement's first ready probe is on its path), and a slow starter is
/// probed about ten times in its first second, then once a second.
const LAUNCH_FIRST_PROBE: Duration = Duration::from_millis(25);

/// Failed probes of a launching instance after which its record says why
/// (about a second and a half in): fewer are a server still starting, and
/// each change of reason is a replicated write.
const LAUNCH_FAILURES_SHOWN: u32 = 12;

/// What the supervisor needs from a job spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisePolicy {
    /// Probe timings, `None` without a health check.
    pub health: Option<ProbePolicy>,
    /// Restart budget and backoff.
    pub restart: RestartPolicy,
    /// Time between SIGTERM and SIGKILL.
    pub kill_timeout: Duration,
    /// A launching instance not healthy by then has failed.
    pub healthy_deadline: Duration,
}

/// Probe timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePolicy {
    /// Time between probes once ready.
    pub interval: Duration,
    /// Successes in a row to be ready.
    pub healthy_threshold: u32,
    /// Failures in a row, once ready, to fail.
    pub unhealthy_threshold: u32,
}

impl SupervisePolicy {
    /// The policy of a job.
    pub fn from_spec(spec: &JobSpec) -> SupervisePolicy {
        SupervisePolicy {
            health: spec.health.as_ref().map(|h| ProbePolicy {
                interval: Duration::from_millis(h.interval_ms),
                healthy_threshold: h.healthy_threshold.max(1),
                unhealthy_threshold: h.unhealthy_threshold.max(1),
            }),
            restart: spec.restart,
            kill_timeout: Duration::from_millis(spec.kill_timeout_ms),
            healthy_deadline: Duration::from_millis(spec.update.healthy_deadline_ms),
        }
    }
}

/// What happened to the process, as the shell reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// The process was spawned (after a [`SuperviseAction::Spawn`]).
    Started,
    /// The process (group) ended.
    Exited(Exit),
    /// The probe asked for passed.
    ProbeOk,
    /// The probe asked for failed; the text says how.
    ProbeFailed(String),
    /// Spawning failed (spore missing, bad command); counts as a failure.
    SpawnFailed(String),
}

/// What the shell should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuperviseAction {
    /// Start the process (first start or restart).
    Spawn,
    /// Run one probe now and report its outcome.
    Probe,
    /// SIGTERM the process group, SIGKILL after `grace`; report the exit.
    Kill {
        /// Time allowed to stop cleanly.
        grace: Duration,
    },
    /// The instance record changed: write it (state, reason, and the
    /// getters' restarts and last exit).
    Record {
        /// The new state.
        state: InstanceState,
        /// Why, in words.
        reason: String,
    },
    /// Crash loop: release the slot and record that this node avoids the
    /// job for `avoid_for` (wall time now plus this, in `avoid_until_ms`).
    GiveUp {
        /// How long placement keeps the job off this node.
        avoid_for: Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Spawn asked for, not yet started.
    Spawning,
    /// Running, not yet healthy.
    Launching { deadline: Time },
    /// Running and healthy.
    Ready,
    /// Killed for failing; the exit starts the backoff.
    Killing,
    /// Waiting to restart.
    Backoff { until: Time },
    /// Draining on request: still running, `draining` in its record (the
    /// edge sends it no new request), stopped at `until`.
    Draining { until: Time },
    /// Stopping on request.
    Stopping,
    /// Ended on request.
    Stopped,
    /// Gave up after a crash loop.
    GaveUp,
}

/// The supervisor of one instance.
#[derive(Debug)]
pub struct Supervisor {
    policy: SupervisePolicy,
    phase: Phase,
    /// Failures within the restart window, oldest first (at most
    /// `attempts + 1`).
    failures: VecDeque<Time>,
    ok_streak: u32,
    /// Probes scheduled since the last start (the launch ramp).
    launch_probes: u32,
    fail_streak: u32,
    next_probe: Option<Time>,
    probing: bool,
    restarts: u32,
    last_exit: Option<Exit>,
    /// Why the last failure happened, for the record.
    failure: String,
    state: InstanceState,
    reason: String,
    actions: VecDeque<SuperviseAction>,
}

impl Supervisor {
    /// A new instance: asks for [`SuperviseAction::Spawn`] at once.
    pub fn new(policy: SupervisePolicy) -> Supervisor {
        let mut s = Supervisor::with(policy, Phase::Spawning, InstanceState::Launching);
        s.actions.push_back(SuperviseAction::Spawn);
        s
    }

    /// A process found running after an agent restart, whose record says
    /// `state` and `restarts`: supervision resumes without a restart and
    /// without a record write; a `ready` instance stays ready while its
    /// probes pass.
    pub fn adopt(
        policy: SupervisePolicy,
        now: Time,
        state: InstanceState,
        restarts: u32,
    ) -> Supervisor {
        let deadline = now + policy.healthy_deadline;
        let phase = match state {
            InstanceState::Ready => Phase::Ready,
            _ => Phase::Launching { deadline },
        };
        let mut s = Supervisor::with(policy, phase, state);
        s.restarts = restarts;
        match s.policy.health {
            Some(_) => s.next_probe = Some(now),
            None if phase != Phase::Ready => s.become_ready(),
            None => {}
        }
        s
    }

    fn with(policy: SupervisePolicy, phase: Phase, state: InstanceState) -> Supervisor {
        Supervisor {
            failures: VecDeque::with_capacity(policy.restart.attempts as usize + 1),
            policy,
            phase,
            ok_streak: 0,
            launch_probes: 0,
            fail_streak: 0,
            next_probe: None,
            probing: false,
            restarts: 0,
            last_exit: None,
            failure: String::new(),
            state,
            reason: String::new(),
            actions: VecDeque::new(),
        }
    }

    /// The state the instance record should show.
    pub fn state(&self) -> InstanceState {
        self.state
    }

    /// Why it is in that state.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// How the process last ended.
    pub fn last_exit(&self) -> Option<Exit> {
        self.last_exit
    }

    /// Whether the supervisor is done (stopped, or gave up): drop it.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Stopped | Phase::GaveUp)
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<SuperviseAction> {
        self.actions.pop_front()
    }

    /// When [`Supervisor::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let phase = match self.phase {
            Phase::Launching { deadline } => Some(deadline),
            Phase::Backoff { until } | Phase::Draining { until } => Some(until),
            _ => None,
        };
        let probe = self.next_probe.filter(|_| !self.probing);
        match (phase, probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drains the instance (replaced by a proven new version): its record
    /// says `draining` with `reason` while it finishes what it serves, and
    /// it is stopped at `now + period`. An instance not running (spawning,
    /// between restarts) stops at once; one already stopping or draining
    /// is left as it is.
    pub fn drain(&mut self, now: Time, period: Duration, reason: String) {
        match self.phase {
            Phase::Launching { .. } | Phase::Ready => {
                self.phase = Phase::Draining {
                    until: now + period,
                };
                self.next_probe = None;
                self.probing = false;
                self.set(InstanceState::Draining, reason);
            }
            Phase::Spawning | Phase::Backoff { .. } | Phase::Killing => self.stop(),
            Phase::Draining { .. } | Phase::Stopping | Phase::Stopped | Phase::GaveUp => {}
        }
    }

    /// Stops the instance on request (scale down, moved, job stopped). A
    /// draining instance finishes its drain first: it is stopped then.
    pub fn stop(&mut self) {
        match self.phase {
            Phase::Stopping | Phase::Stopped | Phase::GaveUp | Phase::Draining { .. } => {}
            Phase::Backoff { .. } | Phase::Spawning => {
                self.phase = Phase::Stopped;
                self.set(InstanceState::Stopped, "stopped".into());
            }
            Phase::Launching { .. } | Phase::Ready | Phase::Killing => self.kill_to_stop(),
        }
    }

    /// SIGTERM now, SIGKILL after the grace; the exit ends it.
    fn kill_to_stop(&mut self) {
        self.phase = Phase::Stopping;
        self.next_probe = None;
        self.set(InstanceState::Draining, "stopping".into());
        let grace = self.policy.kill_timeout;
        self.actions.push_back(SuperviseAction::Kill { grace });
    }

    /// Time passed: probes, deadlines and restarts that are due.
    pub fn handle_timeout(&mut self, now: Time) {
        if let Phase::Draining { until } = self.phase
            && now >= until
        {
            self.kill_to_stop();
            return;
        }
        if let Phase::Backoff { until } = self.phase
            && now >= until
        {
            self.phase = Phase::Spawning;
            self.restarts += 1;
            self.actions.push_back(SuperviseAction::Spawn);
            return;
        }
        if let Phase::Launching { deadline } = self.phase
            && now >= deadline
        {
            let secs = self.policy.healthy_deadline.as_secs();
            self.kill_for(format!("not healthy within {secs} s"));
            return;
        }
        if self.next_probe.is_some_and(|t| now >= t) && !self.probing {
            self.probing = true;
            self.next_probe = None;
            self.actions.push_back(SuperviseAction::Probe);
        }
    }

    /// What the process did. `rng` spreads restart delays.
    pub fn handle_event(&mut self, now: Time, event: ProcessEvent, rng: &mut impl rand::Rng) {
        match event {
            ProcessEvent::Started => self.started(now),
            ProcessEvent::ProbeOk => {
                self.probing = false;
                self.ok_streak += 1;
                self.fail_streak = 0;
                let threshold = self.policy.health.map_or(1, |h| h.healthy_threshold);
                if matches!(self.phase, Phase::Launching { .. }) && self.ok_streak >= threshold {
                    self.become_ready();
                }
                self.schedule_probe(now);
            }
            ProcessEvent::ProbeFailed(why) => {
                self.probing = false;
                self.fail_streak += 1;
                self.ok_streak = 0;
                let threshold = self.policy.health.map_or(1, |h| h.unhealthy_threshold);
                if self.phase == Phase::Ready && self.fail_streak >= threshold {
                    self.kill_for(format!("unhealthy: {why}"));
                } else {
                    // Not ready yet and still failing: say why, so a check
                    // that can never pass is not a silent `launching`
                    // until the deadline. Past the first few, which a
                    // starting server usually fails.
                    if matches!(self.phase, Phase::Launching { .. })
                        && self.fail_streak >= LAUNCH_FAILURES_SHOWN
                    {
                        self.set(
                            InstanceState::Launching,
                            format!("health check failing: {why}"),
                        );
                    }
                    self.schedule_probe(now);
                }
            }
            ProcessEvent::Exited(exit) => {
                self.last_exit = Some(exit);
                self.probing = false;
                self.next_probe = None;
                match self.phase {
                    Phase::Stopping | Phase::Draining { .. } => {
                        self.phase = Phase::Stopped;
                        self.set(InstanceState::Stopped, "stopped".into());
                    }
                    Phase::Killing => {
                        let why = std::mem::take(&mut self.failure);
                        self.fail(now, why, rng);
                    }
                    Phase::Launching { .. } | Phase::Ready | Phase::Spawning => {
                        self.fail(now, exit.to_string(), rng);
                    }
                    Phase::Backoff { .. } | Phase::Stopped | Phase::GaveUp => {}
                }
            }
            ProcessEvent::SpawnFailed(why) => {
                if self.phase == Phase::Spawning {
                    self.fail(now, format!("could not start: {why}"), rng);
                }
            }
        }
    }

    fn started(&mut self, now: Time) {
        if self.phase != Phase::Spawning {
            return;
        }
        self.ok_streak = 0;
        self.fail_streak = 0;
        self.launch_probes = 0;
        self.phase = Phase::Launching {
            deadline: now + self.policy.healthy_deadline,
        };
        self.set(InstanceState::Launching, String::new());
        match self.policy.health {
            Some(_) => self.schedule_probe(now),
            None => self.become_ready(),
        }
    }

    fn become_ready(&mut self) {
        self.phase = Phase::Ready;
        self.set(InstanceState::Ready, String::new());
    }

    fn schedule_probe(&mut self, now: Time) {
        let Some(h) = self.policy.health else { return };
        let every = match self.phase {
            Phase::Ready => h.interval,
            Phase::Launching { .. } => {
                let k = self.launch_probes.min(20);
                let first = LAUNCH_FIRST_PROBE.as_millis() as u64;
                let ramp = Duration::from_millis(first * 5u64.pow(k) / 4u64.pow(k));
                self.launch_probes += 1;
                ramp.min(h.interval.min(LAUNCH_PROBE_EVERY))
            }
            _ => return,
        };
        self.next_probe = Some(now + every);
    }

    fn kill_for(&mut self, why: String) {
        self.phase = Phase::Killing;
        self.next_probe = None;
        self.failure = why;
        let grace = self.policy.kill_timeout;
        self.actions.push_back(SuperviseAction::Kill { grace });
    }

    /// Counts a failure; restarts after a backoff, or gives up.
    fn fail(&mut self, now: Time, why: String, rng: &mut impl rand::Rng) {
        let p = self.policy.restart;
        let window = Duration::from_millis(p.interval_ms);
        while self
            .failures
            .front()
            .is_some_and(|&t| now.since(t) >= window)
        {
            self.failures.pop_front();
        }
        if self.failures.len() > p.attempts as usize {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let n = self.failures.len() as u32;
        if n > p.attempts {
            self.phase = Phase::GaveUp;
            let mins = p.interval_ms / 60_000;
            let reason =
                format!("crash loop: {n} failures within {mins} min, last {why}; slot released");
            self.set(InstanceState::Failed, reason);
            let avoid_for = Duration::from_millis(p.avoid_ms);
            self.actions
                .push_back(SuperviseAction::GiveUp { avoid_for });
            return;
        }
        let delay = backoff(&p, n, rng);
        self.phase = Phase::Backoff { until: now + delay };
        let reason = format!(
            "{why}; restart {n} of {} in {} ms",
            p.attempts,
            delay.as_millis()
        );
        self.set(InstanceState::Failed, reason);
    }

    fn set(&mut self, state: InstanceState, reason: String) {
        if (state, &reason) != (self.state, &self.reason) {
            self.state = state;
            self.reason.clone_from(&reason);
            self.actions
                .push_back(SuperviseAction::Record { state, reason });
        }
    }
}

/// The delay before restart `n` (1-based): `delay_ms` times `backoff` per
/// earlier restart (doubling by default), at most `max_delay_ms`, then
/// spread by up to `jitter_percent` either way.
pub fn backoff(p: &RestartPolicy, n: u32, rng: &mut impl rand::Rng) -> Duration {
    let factor = u64::from(p.backoff.max(1)).saturating_pow(n.saturating_sub(1));
    let doubled = p.delay_ms.saturating_mul(factor);
    let base = doubled.min(p.max_delay_ms);
    let j = u64::from(p.jitter_percent.min(100));
    let spread = base * j / 100;
    let offset = if spread == 0 {
        0
    } else {
        rng.next_u64() % (2 * spread + 1)
    };
    Duration::from_millis(base - spread + offset)
}

#[cfg(test)]
mod tests;
