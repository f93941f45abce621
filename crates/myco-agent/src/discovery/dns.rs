//! `--join NAME:PORT` with DNS: every address the name resolves to is a
//! seed (a round-robin name for the fleet, or a name per node), and while
//! the node sees no peer it resolves the names again, so a fleet whose
//! addresses changed (DHCP, a replaced Pi) is found without a restart.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::mesh::MeshHandle;

/// How often an isolated node resolves its join names again.
pub const REJOIN_EVERY: Duration = Duration::from_secs(5);
/// Most addresses taken from one name: a resolver must not flood the seeds.
const MAX_ADDRS_PER_NAME: usize = 32;

/// Every address `target` (`HOST:PORT` or `IP:PORT`) resolves to, in
/// resolver order, at most [`MAX_ADDRS_PER_NAME`].
pub async fn resolve_all(target: &str) -> std::io::Result<Vec<SocketAddr>> {
    let addrs = tokio::net::lookup_host(target).await?;
    let mut seen = BTreeSet::new();
    Ok(addrs
        .filter(|a| seen.insert(*a))
        .take(MAX_ADDRS_PER_NAME)
        .collect())
}

/// Joins through every address of the join targets, now and whenever the
/// node is found alone.
pub struct Rejoin {
    targets: Vec<String>,
    mesh: MeshHandle,
}

impl Rejoin {
    /// For the `--join` targets of this node.
    pub fn new(targets: Vec<String>, mesh: MeshHandle) -> Rejoin {
        Rejoin { targets, mesh }
    }

    /// Resolves every target and joins through each address; returns how
    /// many addresses were handed to the core.
    pub async fn once(&self) -> usize {
        let mut joined = 0;
        for target in &self.targets {
            match resolve_all(target).await {
                Ok(addrs) if addrs.is_empty() => {
                    tracing::warn!(%target, "join address resolved to nothing")
                }
                Ok(addrs) => {
                    tracing::debug!(%target, ?addrs, "joining through every address");
                    for addr in addrs {
                        if self.mesh.join(addr).await.is_err() {
                            return joined;
                        }
                        joined += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(%target, error = %e, "cannot resolve join address: check the name, or give IP:PORT")
                }
            }
        }
        joined
    }

    /// Joins now, then every [`REJOIN_EVERY`] while the node has no peer,
    /// until the mesh loop stops. Only names need this (an IP's seed is
    /// retried by the core itself), so it returns at once without any.
    pub async fn run(self) {
        self.once().await;
        if self.targets.iter().all(|t| t.parse::<SocketAddr>().is_ok()) {
            return;
        }
        let mut tick = tokio::time::interval(REJOIN_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if !self.mesh.snapshot().connected {
                tracing::debug!("alone: resolving the join names again");
                self.once().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_resolves_to_every_address_and_a_literal_to_itself() {
        let literal = resolve_all("127.0.0.1:7946").await.unwrap();
        assert_eq!(literal, vec!["127.0.0.1:7946".parse().unwrap()]);
        // `localhost` has an IPv4 and often an IPv6 address: all are kept,
        // each once.
        let local = resolve_all("localhost:7946").await.unwrap();
        assert!(
            local.contains(&"127.0.0.1:7946".parse().unwrap()),
            "{local:?}"
        );
        let unique: BTreeSet<_> = local.iter().collect();
        assert_eq!(unique.len(), local.len());
        assert!(resolve_all("no-such-host.invalid:1").await.is_err());
    }
}
