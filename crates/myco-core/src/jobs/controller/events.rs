//! What the controller tells about its healing and rollout decisions: one
//! [`JobEvent`] per decision, with the reason in words, for the shell to
//! log, publish (`/v1/events`) and count. Bounded: a shell that never
//! polls loses the oldest, counted, never memory.

use std::collections::VecDeque;

/// Events kept for the shell at most.
pub const EVENT_QUEUE: usize = 256;

/// What kind of decision an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobEventKind {
    /// A slot whose node is down (or gave up on it) starts here.
    Moved,
    /// A rollout step: a new instance starts, or an old one drains.
    RolloutStep,
    /// A rollout ended: every slot runs the current version.
    RolloutDone,
    /// A rollout halted: a new instance did not become healthy.
    RolloutFailed,
    /// This node put the previous version back after a failed rollout.
    Reverted,
    /// A `duplicates = "never"` decision: this node lost (or regained) a
    /// majority, or stopped an instance because it has none.
    Fenced,
}

impl JobEventKind {
    /// Every kind, for metrics that show zeros too.
    pub const ALL: [JobEventKind; 6] = [
        JobEventKind::Moved,
        JobEventKind::RolloutStep,
        JobEventKind::RolloutDone,
        JobEventKind::RolloutFailed,
        JobEventKind::Reverted,
        JobEventKind::Fenced,
    ];

    /// The snake_case name the API and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            JobEventKind::Moved => "moved",
            JobEventKind::RolloutStep => "rollout_step",
            JobEventKind::RolloutDone => "rollout_done",
            JobEventKind::RolloutFailed => "rollout_failed",
            JobEventKind::Reverted => "reverted",
            JobEventKind::Fenced => "fenced",
        }
    }
}

/// One decision, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobEvent {
    /// What kind.
    pub kind: JobEventKind,
    /// The job.
    pub job: String,
    /// The decision and its reason, one line
    /// ("node … down: hello/2 moves to …").
    pub message: String,
}

/// The bounded queue of events not yet polled.
#[derive(Debug, Default)]
pub(super) struct Events {
    queue: VecDeque<JobEvent>,
    /// Events dropped because the shell did not poll.
    pub(super) dropped: u64,
}

impl Events {
    pub(super) fn push(&mut self, kind: JobEventKind, job: &str, message: String) {
        if self.queue.len() >= EVENT_QUEUE {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(JobEvent {
            kind,
            job: job.to_string(),
            message,
        });
    }

    pub(super) fn pop(&mut self) -> Option<JobEvent> {
        self.queue.pop_front()
    }
}
