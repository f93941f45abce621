//! `myco peer add`: ask the agent to join a peer, then wait for the answer.
//!
//! The API only records the wish (the join is gossip, asynchronous), so
//! without waiting a typo'd address would look like a success.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use myco_client::Client;

/// How often the member list is read while waiting.
const POLL: Duration = Duration::from_millis(200);

/// Joins `addr` through `c`; waits up to `wait` for a live member there.
pub fn add(c: &Client, addr: &str, wait: Duration) -> anyhow::Result<()> {
    let wanted: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| {
            format!("{addr} is not HOST:PORT (the peer's mesh port, 7946 by default)")
        })?
        .collect();
    c.peer_add(addr)?;
    if wait.is_zero() {
        println!(
            "asked {} to join {addr}; it retries in the background while it has no live peer (check with `myco peers`)",
            c.base()
        );
        return Ok(());
    }
    let start = Instant::now();
    loop {
        let peers = c.peers()?;
        if let Some(p) = peers.iter().find(|p| {
            p.state == "alive"
                && p.addr
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| wanted.contains(&a))
        }) {
            println!(
                "joined {addr}: {} ({}) is alive; {} peers now",
                p.name,
                p.id,
                peers.iter().filter(|p| p.state == "alive").count()
            );
            return Ok(());
        }
        if start.elapsed() >= wait {
            bail!(
                "no myco agent answered at {addr} within {}s: check the address is a peer's mesh port (7946 by default) and that both use the same cluster key; the agent keeps retrying while it has no live peer (`myco peers` shows when it joins)",
                wait.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}
