//! The mesh: the loop that owns the core, and the handle the rest of the
//! agent reaches it through.
//!
//! - [`event_loop`]: [`MeshLoop`], one task over a closed set of inputs
//!   (datagram, stream message, timer, command, durable write).
//! - [`commands`]: what may be asked of the loop.
//! - [`handle`]: [`MeshHandle`], the typed API: `write` (answers once
//!   durable and released), `get`/`scan` (from the [`ReadView`], never
//!   waiting for the loop), membership, join, rekey, leave.
//! - [`view`]: the copy-on-write [`ReadView`] of the replicated tables.
//! - [`snapshot`]: the membership and counters [`Snapshot`].
//! - [`clock`]: the core's [`Clock`].
//! - [`priority`]: the mesh thread's scheduling priority.

mod apps;
mod clock;
mod commands;
mod event_loop;
mod handle;
pub mod priority;
mod snapshot;
mod view;

use std::sync::Arc;

use myco_core::Node;
use tokio::net::UdpSocket;

pub use apps::AppRoutes;
pub use clock::Clock;
pub use event_loop::{EVENT_BUFFER, MAX_PENDING_WRITES, MeshLoop};
pub use handle::{CommandError, MeshHandle, WriteError};
pub use snapshot::Snapshot;
pub use view::{LEAF_MAX, ReadView};

use crate::net::streams::{Inbox, Streams};
use crate::spores::SporeStore;
use crate::store::Store;

/// Everything the loop owns.
pub struct MeshParts {
    /// The core, restored from the store.
    pub node: Node,
    /// The bound UDP socket.
    pub socket: UdpSocket,
    /// The clock the core runs on.
    pub clock: Clock,
    /// The stream transport.
    pub streams: Streams,
    /// Messages arriving on it.
    pub incoming: Inbox,
    /// The durable store.
    pub store: Arc<Store>,
    /// The spore store (blob messages go to it, not to the core).
    pub spores: Arc<SporeStore>,
    /// Remote log reading (jobs-channel messages go to it).
    pub logs: Arc<crate::logs::RemoteLogs>,
    /// Cache and messaging: their channels' messages go to these queues.
    pub apps: AppRoutes,
}
