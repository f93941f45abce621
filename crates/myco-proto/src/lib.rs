//! Myco's wire and domain types: node ids, the node manifest, the frames nodes
//! exchange, the sealed datagram envelope and the cluster key ring, and the
//! JSON shapes of the HTTP API.
//!
//! Nothing here does I/O, reads a clock or draws randomness: callers pass in
//! every nonce component and every key. The core, the agent, the simulator
//! and the CLI all speak through these types, so every format defined here
//! carries a version from the first release.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod blob;
pub mod bytes;
pub mod cache;
pub mod channel;
pub mod compat;
pub mod edge_api;
pub mod envelope;
pub mod frame;
pub mod horizon;
pub mod id;
pub mod instance;
pub mod job;
pub mod jobs_api;
pub mod key;
pub mod logs;
pub mod msg;
pub mod node_mark;
pub mod resp;
pub mod state;
pub mod store_record;
pub mod sync;
pub mod versioned;

pub use envelope::{Envelope, EnvelopeError, Header};
pub use frame::{Capacity, Frame, NodeManifest};
pub use id::NodeId;
pub use key::{ClusterKey, KeyError, KeyId, KeyRing};
pub use state::{Change, Table, Timestamp};

/// The largest datagram Myco sends or accepts on the mesh port, envelope
/// included. Chosen to fit a 1500-byte Ethernet MTU with IPv6 and UDP headers.
pub const MAX_DATAGRAM: usize = 1400;

/// The version of this build, gossiped in the node manifest.
pub const MYCO_VERSION: &str = env!("CARGO_PKG_VERSION");
