//! The Myco agent: the tokio shell around the sans-IO core.
//!
//! Rooms:
//! - [`config`]: settings, the data dir, the machine's capacity.
//! - [`mesh`]: the event loop that owns the core and the UDP socket, and
//!   [`mesh::MeshHandle`], the one way the rest of the agent reaches it
//!   (durable writes, reads from a published view, membership).
//! - [`net`]: the mTLS stream transport, with named channels.
//! - [`store`]: the redb-backed durable store with group commit.
//! - [`spores`]: the spore content store, its distribution and workflows.
//! - [`http`]: the axum API, one module per resource.
//! - [`exec`]: process supervision mechanisms (spawn, stop, cgroups,
//!   logs, probes, ports, records).
//! - [`jobs`]: the job runtime: drives the core's jobs controller and
//!   carries out its actions with [`exec`].
//! - [`edge`]: the HTTP edge gateway (to come).
//! - [`usage`]: every node's live CPU and memory use, asked of peers on read.

#![deny(missing_docs)]
// deny, not forbid: process supervision allows it in its one module.
#![deny(unsafe_code)]

pub mod cache;
pub mod config;
pub mod discovery;
pub mod edge;
pub mod embed;
pub mod exec;
pub mod http;
pub mod jobs;
pub mod log_identity;
pub mod logs;
pub mod mesh;
pub mod msg;
pub mod net;
pub mod resp;
pub mod spores;
pub mod store;
pub mod usage;

mod run;
mod running;

// Paths the CLI has always used.
pub use config::{datadir, settings, sysinfo};
pub use embed::Myco;
pub use run::{run, start};
pub use running::Running;
pub use settings::{AgentOptions, AgentSettings};
