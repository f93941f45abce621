//! Finding the mesh: join names resolved to every address (and again while
//! the node is alone), and LAN discovery by sealed multicast beacons.
//!
//! Both only hand addresses to the core's join (`MeshHandle::join`); the
//! core says hello, retries and forgets as it does for addresses typed on
//! the command line.

mod dns;
mod lan;

pub use dns::{Rejoin, resolve_all};
pub use lan::{Beacons, LanDiscovery};

use myco_proto::KeyRing;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::settings::AgentSettings;
use crate::mesh::MeshHandle;

/// Starts what `settings` asks for: the join names (always; nothing to do
/// without any) and LAN beacons (with `--discover`). `keys` follows key
/// rotation. The tasks end when the mesh loop stops; abort them sooner.
pub fn start(
    settings: &AgentSettings,
    mesh: &MeshHandle,
    keys: watch::Receiver<KeyRing>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if !settings.join.is_empty() {
        let rejoin = Rejoin::new(settings.join.clone(), mesh.clone());
        tasks.push(tokio::spawn(rejoin.run()));
    }
    if let Some(lan) = settings.discover {
        let beacons = Beacons::bind(lan, settings.advertise.ip(), mesh.clone(), keys)?;
        tracing::info!(group = %lan.group, port = lan.port, "discovering peers on the LAN");
        tasks.push(tokio::spawn(beacons.run()));
    }
    Ok(tasks)
}
