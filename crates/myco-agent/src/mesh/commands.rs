//! What the rest of the agent may ask of the mesh loop, through
//! [`super::MeshHandle`]. Reads are not commands: they use the published
//! [`super::ReadView`] and never wait for the loop.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use myco_proto::{Table, Timestamp};
use tokio::sync::oneshot;

use super::handle::WriteError;

/// A request to the loop, over a bounded channel.
#[derive(Debug)]
pub(crate) enum Command {
    /// Join through a peer at this address.
    Join(SocketAddr),
    /// Replace the cluster key ring.
    Rekey(myco_proto::KeyRing),
    /// Leave the mesh; answered once the leave messages are sent.
    Leave(oneshot::Sender<()>),
    /// Write (or with `None` delete) a key. The loop applies it, has the
    /// store make it durable, releases it to peers, then answers.
    Write {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// Value, or `None` to delete.
        value: Option<Vec<u8>>,
        /// The answer: the write's version once durable.
        reply: oneshot::Sender<Result<Timestamp, WriteError>>,
    },
    /// Test faults: drop all traffic to and from these mesh addresses
    /// (only reachable when the agent runs with `MYCO_FAULTS=1`).
    Faults(BTreeSet<SocketAddr>),
}
