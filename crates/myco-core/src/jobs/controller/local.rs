//! What the controller keeps per local instance, and the instance record
//! it implies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{Exit, INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, Resources, RestartPolicy};

use crate::jobs::reconcile::{LocalInstance, LocalStatus};
use crate::jobs::supervise::{SupervisePolicy, Supervisor};

/// The grace before SIGKILL of a process whose job version is unknown
/// (found after an agent restart, its job changed or removed since):
/// the job spec's default.
pub(super) const UNKNOWN_KILL_GRACE: Duration = Duration::from_secs(5);

/// One instance this node runs, ran, or found running.
#[derive(Debug)]
pub(super) struct Local {
    /// The job's name.
    pub(super) job: String,
    pub(super) slot: u32,
    pub(super) version: u64,
    /// The record of the version it runs; `None` for a process found after
    /// an agent restart whose version the view no longer holds.
    pub(super) record: Option<Arc<JobRecord>>,
    pub(super) status: LocalStatus,
    /// Present while `Supervised`.
    pub(super) sup: Option<Supervisor>,
    /// What it takes from this node.
    pub(super) resources: Resources,
    /// Where it listens, as the shell said.
    pub(super) addr: Option<SocketAddr>,
    /// The spore digest it runs.
    pub(super) digest: String,
    /// What the record said when no supervisor holds it (a found
    /// process): state, reason, restarts; the last exit until the
    /// supervisor sees one.
    pub(super) state: InstanceState,
    pub(super) reason: String,
    pub(super) restarts: u32,
    pub(super) last_exit: Option<Exit>,
    /// Set when its supervisor gave up.
    pub(super) avoid_until_ms: Option<u64>,
    /// A spawn was asked for and not yet answered (`Started` or
    /// `SpawnFailed`).
    pub(super) spawning: bool,
    /// Stopped while its spawn was outstanding: kill it when it starts,
    /// drop it when it is gone.
    pub(super) doomed: bool,
}

impl Local {
    /// A new instance of `record`, supervised from the start.
    pub(super) fn start(record: Arc<JobRecord>, slot: u32) -> Local {
        let sup = Supervisor::new(SupervisePolicy::from_spec(&record.spec));
        Local {
            job: record.name().to_string(),
            slot,
            version: record.version,
            resources: record.spec.reserved(),
            digest: record.digest().to_string(),
            record: Some(record),
            status: LocalStatus::Supervised,
            sup: Some(sup),
            addr: None,
            state: InstanceState::Launching,
            reason: String::new(),
            restarts: 0,
            last_exit: None,
            avoid_until_ms: None,
            spawning: false,
            doomed: false,
        }
    }

    /// A process found running after an agent restart; `record` is its
    /// version's job record when the view has it, `current` the job's
    /// current record (for its resources), `mine` its instance record.
    pub(super) fn found(
        job: String,
        slot: u32,
        version: u64,
        current: Option<&Arc<JobRecord>>,
        mine: Option<&InstanceRecord>,
    ) -> Local {
        let record: Option<Arc<JobRecord>> = current.filter(|r| r.version == version).cloned();
        let digest = match (&record, mine) {
            (Some(r), _) => r.digest().to_string(),
            (None, Some(m)) => m.digest.clone(),
            (None, None) => String::new(),
        };
        // An unknown version is counted as its job's current size, or the
        // default size: a guess on the side of not over-committing.
        let resources = current.map_or(Resources::default(), |r| r.spec.reserved());
        Local {
            job,
            slot,
            version,
            record,
            status: LocalStatus::Orphan,
            sup: None,
            resources,
            digest,
            addr: mine.and_then(|r| r.addr),
            state: mine.map_or(InstanceState::Launching, |r| r.state),
            reason: mine.map(|r| r.reason.clone()).unwrap_or_default(),
            restarts: mine.map_or(0, |r| r.restarts),
            last_exit: mine.and_then(|r| r.last_exit),
            avoid_until_ms: None,
            spawning: false,
            doomed: false,
        }
    }

    /// The supervision policy: its version's, else a default one (only
    /// used to stop a process whose version is unknown).
    pub(super) fn policy(&self) -> SupervisePolicy {
        match &self.record {
            Some(r) => SupervisePolicy::from_spec(&r.spec),
            None => SupervisePolicy {
                health: None,
                restart: RestartPolicy::default(),
                kill_timeout: UNKNOWN_KILL_GRACE,
                healthy_deadline: Duration::from_secs(300),
            },
        }
    }

    pub(super) fn state(&self) -> InstanceState {
        self.sup.as_ref().map_or(self.state, Supervisor::state)
    }

    /// What the reconciler needs to know of it.
    pub(super) fn as_input(&self, id: &str) -> LocalInstance {
        LocalInstance {
            id: id.to_string(),
            job: self.job.clone(),
            slot: self.slot,
            version: self.version,
            status: self.status,
            resources: self.resources,
        }
    }

    /// The record this instance should have now (`since_ms` is the
    /// caller's business: it changes only with the state).
    pub(super) fn record(&self, id: &str, me: NodeId) -> InstanceRecord {
        let (state, reason, restarts, last_exit) = match &self.sup {
            Some(s) => (
                s.state(),
                s.reason().to_string(),
                s.restarts(),
                s.last_exit().or(self.last_exit),
            ),
            None => (
                self.state,
                self.reason.clone(),
                self.restarts,
                self.last_exit,
            ),
        };
        InstanceRecord {
            format: INSTANCE_RECORD_FORMAT,
            id: id.to_string(),
            job: self.job.clone(),
            slot: self.slot,
            version: self.version,
            node: me,
            state,
            addr: self.addr,
            digest: self.digest.clone(),
            restarts,
            last_exit,
            reason,
            avoid_until_ms: self.avoid_until_ms,
            since_ms: 0,
        }
    }
}

/// Whether two records say the same, `since_ms` aside.
pub(super) fn same(a: &InstanceRecord, b: &InstanceRecord) -> bool {
    let since = |r: &InstanceRecord| InstanceRecord {
        since_ms: 0,
        ..r.clone()
    };
    a.since_ms == b.since_ms && a == b || since(a) == since(b)
}
