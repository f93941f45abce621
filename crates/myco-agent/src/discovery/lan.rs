//! LAN discovery: nodes on one network segment find each other with no
//! address given (`--discover lan`).
//!
//! Each node sends a *beacon* to an administratively scoped multicast group
//! (239.255.77.46, port 7947 unless told otherwise, TTL 1): a `Hello` frame
//! with its identity, sealed in the mesh envelope with the cluster key. A
//! node that opens a beacon (so the sender holds the key) joins through the
//! address inside it. A stranger's beacons fail to open and are dropped (logged at debug); a
//! stranger cannot read ours. This is mDNS's job without mDNS: DNS-SD
//! records cannot be authenticated with our key, and a beacon is one
//! datagram we already know how to seal.
//!
//! Beacons are sealed under epoch `boot | 1 << 63`, a nonce space the mesh
//! socket never uses (its epochs are wall-clock milliseconds), so a beacon
//! never reuses a datagram's nonce. They carry no replay window: replaying
//! one only makes a node say hello to a real member's address again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use myco_proto::frame::Peer;
use myco_proto::{Envelope, Frame, KeyRing};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::mesh::MeshHandle;

/// Beacon interval while the node sees no peer.
const ALONE_EVERY: Duration = Duration::from_secs(1);
/// Beacon interval once in a mesh (newcomers still find it; their own
/// beacons, every second, are what joins them fast).
const MEMBER_EVERY: Duration = Duration::from_secs(15);
/// A discovered address is handed to the core at most this often.
const JOIN_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// Addresses remembered for [`JOIN_AGAIN_AFTER`]; the table starts over
/// past this (a bound, not a cache that must be right).
const REMEMBERED: usize = 256;
/// The nonce-space bit of beacon epochs (see the module docs).
const BEACON_EPOCH: u64 = 1 << 63;

/// Where beacons go: a multicast group and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanDiscovery {
    /// The IPv4 multicast group.
    pub group: Ipv4Addr,
    /// The UDP port.
    pub port: u16,
}

impl LanDiscovery {
    /// The default group: administratively scoped, so routers keep it in.
    pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 46);
    /// The default port, next to the mesh's 7946.
    pub const PORT: u16 = 7947;

    /// Parses `--discover`: `lan` (or `mdns`, its alias), `lan:PORT`.
    pub fn parse(value: &str) -> Result<LanDiscovery, String> {
        let (kind, port) = match value.split_once(':') {
            Some((kind, port)) => (kind, Some(port)),
            None => (value, None),
        };
        if !matches!(kind, "lan" | "mdns") {
            return Err(format!(
                "--discover {value:?}: the only method is `lan` (sealed multicast beacons on the local network), optionally `lan:PORT`"
            ));
        }
        let port = match port {
            None => Self::PORT,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("--discover {value:?}: {p:?} is not a port"))?,
        };
        Ok(LanDiscovery {
            group: Self::GROUP,
            port,
        })
    }
}

/// The beacon task's state: one socket for sending and receiving.
pub struct Beacons {
    config: LanDiscovery,
    socket: UdpSocket,
    mesh: MeshHandle,
    keys: watch::Receiver<KeyRing>,
    counter: u64,
    joined: BTreeMap<SocketAddr, Instant>,
}

impl Beacons {
    /// Opens the group socket on the interface of `advertise` (every
    /// interface if it names none). Errors say what to change.
    pub fn bind(
        config: LanDiscovery,
        advertise: IpAddr,
        mesh: MeshHandle,
        keys: watch::Receiver<KeyRing>,
    ) -> std::io::Result<Beacons> {
        let interface = match advertise {
            IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Every agent on a host gets every beacon (several per host in
        // tests and on big machines).
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port).into())?;
        socket.join_multicast_v4(&config.group, &interface)?;
        socket.set_multicast_if_v4(&interface)?;
        socket.set_multicast_ttl_v4(1)?;
        socket.set_multicast_loop_v4(true)?;
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket.into())?;
        Ok(Beacons {
            config,
            socket,
            mesh,
            keys,
            counter: 0,
            joined: BTreeMap::new(),
        })
    }

    /// Sends and hears beacons until the mesh loop stops.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; myco_proto::MAX_DATAGRAM + 1];
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    self.send().await;
                    let every = if self.mesh.snapshot().connected { MEMBER_EVERY } else { ALONE_EVERY };
                    next = tokio::time::Instant::now() + every;
                }
                got = self.socket.recv_from(&mut buf) => match got {
                    Ok((len, from)) => {
                        if !self.heard(&buf[..len], from) {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "beacon socket receive failed"),
                },
            }
        }
    }

    async fn send(&mut self) {
        let me = self.mesh.me();
        let hello = Frame::Hello(me).encode();
        self.counter += 1;
        let beacon = Envelope::seal(
            &self.keys.borrow(),
            me.id,
            me.boot | BEACON_EPOCH,
            self.counter,
            &hello,
        );
        let to = SocketAddrV4::new(self.config.group, self.config.port);
        if let Err(e) = self.socket.send_to(&beacon, to).await {
            tracing::debug!(error = %e, "beacon not sent");
        }
    }

    /// Handles one datagram from the group; false once the mesh stopped.
    fn heard(&mut self, datagram: &[u8], from: SocketAddr) -> bool {
        let me = self.mesh.me();
        let peer = match open_beacon(&self.keys.borrow(), datagram) {
            Ok(peer) => peer,
            Err(why) => {
                tracing::debug!(%from, why, "beacon refused");
                return true;
            }
        };
        if peer.id == me.id || peer.addr.ip().is_unspecified() {
            return true;
        }
        let now = Instant::now();
        if self
            .joined
            .get(&peer.addr)
            .is_some_and(|t| now.duration_since(*t) < JOIN_AGAIN_AFTER)
        {
            return true;
        }
        if self.joined.len() >= REMEMBERED {
            self.joined.clear();
        }
        self.joined.insert(peer.addr, now);
        tracing::debug!(member = %peer.id, addr = %peer.addr, "beacon heard: joining through it");
        !matches!(
            self.mesh.try_join(peer.addr),
            Err(crate::mesh::CommandError::Stopped)
        )
    }
}

/// The identity in a beacon, if it is authentic and names its own sender.
fn open_beacon(keys: &KeyRing, datagram: &[u8]) -> Result<Peer, &'static str> {
    let (header, plain) = Envelope::open(keys, datagram).map_err(|e| e.reason())?;
    if header.epoch & BEACON_EPOCH == 0 {
        return Err("not_a_beacon");
    }
    match Frame::decode(&plain) {
        Ok(Frame::Hello(peer)) if peer.id == header.sender => Ok(peer),
        Ok(_) => Err("not_a_beacon"),
        Err(_) => Err("undecodable"),
    }
}

#[cfg(test)]
mod tests {
    use myco_proto::{ClusterKey, NodeId};

    use super::*;

    fn peer(id: u64) -> Peer {
        Peer {
            id: NodeId::from_u64(id),
            addr: "10.0.0.2:7946".parse().unwrap(),
            boot: 5,
            bump: 0,
        }
    }

    fn beacon(ring: &KeyRing, sender: u64, epoch: u64, frame: &Frame) -> Vec<u8> {
        Envelope::seal(ring, NodeId::from_u64(sender), epoch, 1, &frame.encode())
    }

    #[test]
    fn only_authentic_beacons_for_their_own_sender_are_opened() {
        let ring = KeyRing::new(ClusterKey::from_bytes([1; 32]));
        let stranger = KeyRing::new(ClusterKey::from_bytes([2; 32]));
        let hello = Frame::Hello(peer(3));
        assert_eq!(
            open_beacon(&ring, &beacon(&ring, 3, 5 | BEACON_EPOCH, &hello)),
            Ok(peer(3))
        );
        assert_eq!(
            open_beacon(&ring, &beacon(&stranger, 3, 5 | BEACON_EPOCH, &hello)),
            Err("unknown_key")
        );
        // A member cannot beacon someone else's identity.
        assert_eq!(
            open_beacon(&ring, &beacon(&ring, 4, 5 | BEACON_EPOCH, &hello)),
            Err("not_a_beacon")
        );
        // An ordinary mesh datagram is not a beacon.
        assert_eq!(
            open_beacon(&ring, &beacon(&ring, 3, 5, &hello)),
            Err("not_a_beacon")
        );
        assert_eq!(open_beacon(&ring, b"MYgarbage"), Err("too_short"));
    }

    #[test]
    fn the_flag_parses_with_a_clear_error() {
        let lan = LanDiscovery::parse("lan").unwrap();
        assert_eq!((lan.group, lan.port), (LanDiscovery::GROUP, 7947));
        assert_eq!(LanDiscovery::parse("mdns").unwrap(), lan);
        assert_eq!(LanDiscovery::parse("lan:9000").unwrap().port, 9000);
        assert!(LanDiscovery::parse("lan:0").is_err());
        assert!(
            LanDiscovery::parse("consul")
                .unwrap_err()
                .contains("only method is `lan`")
        );
    }
}
