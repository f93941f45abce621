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
//! - [`edge`]: the HTTP edge gateway (to come); process supervision will
//!   have its own room, `exec`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod edge;
pub mod http;
pub mod mesh;
pub mod net;
pub mod spores;
pub mod store;

mod run;

// Paths the CLI has always used.
pub use config::{datadir, settings, sysinfo};
pub use run::run;
pub use settings::{AgentOptions, AgentSettings};
