//! Jobs in the core: where instances go, and what one node does about it.
//! Pure functions and small state machines: no clock, no process, no I/O.
//! The agent (and the simulator) feed them replicated state, membership
//! and process events, and carry out what comes back.
//!
//! - [`placement`]: [`placement::place`] maps every slot of every job to a
//!   node, the same on every node given the same view;
//!   [`placement::plan`] explains it for `myco job plan`.
//! - [`settle`]: [`settle::Settle`] holds a node back while its view moves.
//! - [`reconcile`]: [`reconcile::reconcile`], one level-triggered pass for
//!   one node: start, adopt, stop, keep, hold, refuse, forget.
//! - [`fence`]: [`fence::Fence`], the quorum and lease of
//!   `duplicates = "never"` jobs.
//! - [`rollout`]: [`rollout::rollouts`], blue/green replacement of a
//!   job's instances on a version change, read from the records alone.
//! - [`supervise`]: [`supervise::Supervisor`], per instance: probes,
//!   readiness, restarts with backoff and jitter, giving up.
//! - [`controller`]: [`controller::Controller`], the four above glued
//!   into one node's state machine exactly as described below; the agent
//!   and the simulator both drive it (views and process events in,
//!   [`controller::JobAction`]s out).
//!
//! The record types live in `myco_proto`: [`myco_proto::job::JobSpec`]
//! and [`myco_proto::job::JobRecord`] (tables `jobs`, `job_versions`),
//! [`myco_proto::instance::InstanceRecord`] (table `instances`).
//!
//! # How the integrator drives it
//!
//! (This is what [`controller::Controller`] does; drive that.)
//!
//! On every pass (after any change to members, manifests or the `jobs` /
//! `instances` tables, after a process event, and when
//! [`settle::Settle::settled_at`] comes), on each node:
//!
//! 1. Build a [`placement::Cluster`]: `wall_ms` from the HLC's physical
//!    time; one [`placement::NodeView`] per member (`Alive` and `Suspect`
//!    are [`placement::Liveness::Up`], tags and capacity from the
//!    manifest, `tags: None` until it arrives); every decoded
//!    [`myco_proto::job::JobRecord`] of `Table::JOBS`; every decoded
//!    [`myco_proto::instance::InstanceRecord`] of `Table::INSTANCES`.
//! 2. `let p = placement::place(&cluster)`, then
//!    `settle.observe_parts(now, p.members_fingerprint, p.fingerprint)`.
//! 3. `reconcile::reconcile(&ReconcileInput { me, now, wall_ms, placement:
//!    &p, jobs, local, records, capacity, settle: &settle, rollouts,
//!    leaving })`,
//!    `rollouts` being [`rollout::rollouts`] of the same view, where
//!    `local` lists what the shell runs here (after an agent restart,
//!    including the processes it found, as
//!    [`reconcile::LocalStatus::Orphan`]) and `capacity` is this node's.
//! 4. Carry out the actions:
//!    - `Start`: write the instance record (`launching`, id and slot from
//!      the action, `digest` from the job record), create a
//!      [`supervise::Supervisor::new`] and spawn on its `Spawn`;
//!    - `Adopt`: [`supervise::Supervisor::adopt`] with the record's state;
//!    - `Stop`: [`supervise::Supervisor::stop`];
//!    - `Drain`: [`supervise::Supervisor::drain`] (a rollout's old
//!      instance whose replacement is proven);
//!    - `Refuse`: write the record as `failed` with the reason and
//!      `avoid_until_ms` (the job's `restart.avoid_ms` ahead), so placement
//!      on every node moves the slot instead of leaving it refused here;
//!    - `Forget`: delete the record (`JOB/ID`);
//!    - `Hold`, `Keep`: nothing (a `Hold` says when to run again).
//! 5. For each supervisor, feed [`supervise::ProcessEvent`]s and its
//!    timeouts; on `Record`, write the instance record (state, reason,
//!    restarts, last exit) only if it differs; on `GiveUp`, write it with
//!    `avoid_until_ms = wall_ms + avoid_for` and drop the process; the
//!    next pass's placement, on every node, moves the slot elsewhere.
//!
//! Instance records are written only by the node they name, only on
//! change. Whether that node is alive comes from membership, never from a
//! record's age: a down node's records are stale, not renewed, and
//! placement ignores them because the node is not up.
//!
//! # The settle rule and its guarantee
//!
//! A node emits `Start` (and `Stop` for a slot that moved or shrank) only
//! when [`settle::Settle::is_settled`]: the fingerprint of its placement
//! inputs (the up nodes with their tags and capacity, every running job's
//! record, and per slot the nodes holding a live instance, and the
//! avoidances in force) has been unchanged for the settle period `S`
//! ([`reconcile::DEFAULT_STATE_SETTLE`], 300 ms), and its members' part
//! (the up nodes with their tags and capacity) for `S_m`
//! ([`reconcile::DEFAULT_SETTLE`], 1.5 s), or no wait of its own when the
//! change of members only took nodes away ([`settle::Settle::observe_departure`]:
//! a departure is final and gossiped at once, so waiting buys no
//! certainty; the proof below does not cover departures: a survivor
//! that has not heard of one yet still sees the slot held by the dead node
//! and starts nothing, and a duplicate from two departures heard in
//! different orders is an `allowed` surplus drained like any other, while
//! `never` slots wait the fence's lease anyway). The two differ because
//! membership spreads by gossip rounds and records by a direct push: a
//! deploy on a stable mesh waits 300 ms, a node coming or going 1.5 s.
//! `Adopt` and stops for a stopped job are not held back: neither depends
//! on where other nodes put things.
//!
//! **Always (no assumption):** a node starts an instance of a slot only if
//! its own placement assigned that slot to itself from an identical input
//! throughout the last `S`, and from an identical membership throughout
//! the last `S_m`.
//!
//! **If every record change a node holds reaches every node it can reach
//! within `D <= S`, and every membership change within `D_m <= S_m`**
//! (push and anti-entropy latency; gossip): two connected nodes never
//! start the same slot from views that differ by anything older than
//! `S - D` (a record) or `S_m - D_m` (membership). The proof below is for
//! one kind of change, with `S` and `D` of that kind; it holds for each
//! kind because a view stable for `S_m` in its members' part and for `S`
//! in all of it is stable for each kind's own period. Proof sketch:
//! suppose A starts the slot at `tA` and B at `tB >= tA`, both assigned it.
//! Their inputs differ (same inputs give the same assignment), so B holds
//! some change `c` that A's view at `tA` lacks (A's view at `tA`, stable
//! since `tA - S`, reached B by `tA - S + D <= tA`, so B's view includes
//! it). B's view was stable since `tB - S`, so B held `c` since then; A
//! would have had it by `tB - S + D`. A lacked it at `tA`, so
//! `tB > tA + S - D`: the two starts are at least `S - D` apart, and the
//! later one comes from a strictly newer view. A receives `c` within `D`,
//! its placement then no longer gives it the slot, and after its own
//! settle period it stops its copy. So between connected nodes, a slot
//! runs twice at most for about `D + S` plus a stop, and only when the
//! inputs really changed. Across a partition (where `D` is unbounded) each
//! side places on what it sees; the job's `duplicates` policy decides
//! what may run there (`never`: [`fence`], one copy per slot, connected
//! or not).
//!
//! Placement never gives a node more than its manifest offers; each node
//! also checks its own processes before starting (`Refuse`), so a stale
//! view cannot over-commit it.

pub mod controller;
pub mod fence;
pub mod formats;
pub mod placement;
pub mod reconcile;
pub mod rollout;
pub mod settle;
pub mod supervise;

#[cfg(test)]
mod tests;
