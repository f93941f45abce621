//! The Myco agent: the tokio shell around the sans-IO core.
//!
//! It owns everything the core must not touch: the UDP socket
//! ([`mesh::MeshLoop`]), the clock, the data dir ([`datadir`]), the HTTP API
//! and metrics ([`api`], [`metrics`]) and signals. One task runs the core in
//! an event loop over a closed set of inputs (datagram, timer, command);
//! the API reads a snapshot the loop publishes and sends it bounded commands.

#![deny(missing_docs)]
// deny, not forbid: process supervision allows it in its one module.
#![deny(unsafe_code)]

pub mod api;
pub mod datadir;
pub mod exec;
pub mod http;
pub mod kv;
pub mod mesh;
pub mod metrics;
pub mod net;
pub mod settings;
pub mod spores;
pub mod spores_api;
pub mod store;
pub mod streams;
pub mod sysinfo;

mod run;

pub use run::run;
pub use settings::{AgentOptions, AgentSettings};
