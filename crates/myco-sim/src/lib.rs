//! The Myco simulator: many real [`myco_core::Node`]s on a virtual clock and
//! a virtual network, in the manner of TigerBeetle's VOPR.
//!
//! A run is a pure function of its [`SimConfig`], which
//! [`SimConfig::from_seed`] picks from one seed: latency and jitter,
//! loss, duplication, partitions (both ways or one way), crashes, graceful
//! stops and restarts, clock skews, the write workload and, for a third of
//! the seeds, a tombstone grace of seconds. Its `Display` prints every
//! setting, so a failing run is replayed from the seed it prints.
//!
//! The network carries datagrams (gossip) and stream messages
//! (replication: ordered per pair, never duplicated, lost as a broken
//! connection would lose them). Each node has a simulated disk with group
//! commit: a write is acknowledged (and the node told, so it may send it
//! to peers) only once durable, `fsync` (5 ms) later, and a crash before
//! that tears it. Each node's clock is skewed by a fixed offset.
//!
//! [`run`] goes through five phases:
//! 1. **formation**: every node starts within a second and joins through
//!    node 0; they must agree on membership within a budget; random
//!    writes start;
//! 2. **safety**: faults are injected for [`SimConfig::safety`] of virtual
//!    time while the checkers watch every event; writes go on, and those
//!    made in a calm stretch are timed until every node holds them;
//! 3. **liveness**: faults and writes stop (partitions heal, loss ends,
//!    stopped nodes restart) and the nodes must agree again within a
//!    budget, then hold identical state within another;
//! 4. **settle**: for [`SimConfig::settle`], downs decided before the heal
//!    may still echo; the nodes must agree again at its end;
//! 5. **idle**: nothing happens for [`SimConfig::idle`]; no live node may be
//!    declared down, and the traffic measured is the price of membership
//!    and of anti-entropy at rest. At its end the replicas must still be
//!    identical and hold every acknowledged write.
//!
//! "Agree" means: every running node sees every other running node alive in
//! its current life (boot and bump), and every stopped node down, left or
//! not at all. Budgets are in [`Budgets`], with their justification.
//!
//! The checkers live apart from the world they judge (modules `check` for
//! membership, `state_check` for state: identical replicas, no lost
//! acknowledged write, hybrid clocks that never go back or reissue the
//! timestamp of a write anyone else held, no value back after its tombstone was collected); the
//! first violation ends the run with a [`Violation`] that names the rule, the
//! virtual time, the nodes involved and the settings. A passing run returns a
//! [`Report`] with its figures and a digest of every delivery: two runs of
//! one config have the same digest.
//!
//! [`run_jobs`] runs the jobs layer on the same world: the real
//! `myco_core::jobs::controller::Controller` on every node, simulated
//! processes, an operator changing jobs, the seed's membership faults;
//! safety checked every step and liveness after the heal (see the
//! `jobs` module).
//!
//! **What it never does:** read a clock for anything but the report's wall
//! time, use a random source other than the seed, or iterate a hash map.
//! One `StdRng` seeded from the seed draws every datagram's fate, fault and
//! node seed; a second one every write and stream message's fate, so the
//! workload never shifts membership's random choices. The event queue
//! breaks time ties by insertion order.
//! Nodes are named by index: `n3` is node index 3, `NodeId::from_u64(4)`,
//! at `10.0.0.4:7946`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod check;
mod config;
mod disk;
mod faults;
mod jobs;
mod jobs_agents;
mod jobs_check;
mod jobs_procs;
mod jobs_workload;
mod net;
mod phases;
mod queue;
mod report;
mod state_check;
mod workload;
mod world;

pub use cache::{CacheReport, CacheSimConfig, run_cache};
pub use check::{Violation, ViolationKind};
pub use config::{
    Budgets, CrashPlan, DETECTION_MAX_LOSS, Fault, FaultPlan, MAX_SKEW_MS, NetConfig,
    PartitionPlan, SimConfig, Workload,
};
pub use jobs::{JobsConfig, JobsReport, run_jobs};
pub use phases::run;
pub use report::{Detection, Propagation, Report, StateReport, Traffic};
