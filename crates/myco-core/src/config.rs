//! Tunables of the core. Defaults target a LAN of small machines: a dead
//! node is declared down in about two seconds.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use myco_proto::envelope::MAX_PLAINTEXT;

/// Settings of one node's core; every node of a mesh should use the same.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How often SWIM probes a member.
    pub probe_period: Duration,
    /// How long a probe waits for an ack before asking others to probe.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// How often membership updates are pushed to a few members.
    pub gossip_period: Duration,
    /// How often a node announces itself to a few down members, so a healed
    /// partition merges back within seconds.
    pub announce_down_period: Duration,
    /// How often housekeeping runs (join retries, manifest fetches, forgetting).
    pub tick: Duration,
    /// How long down and left members stay listed before they are forgotten.
    pub forget_after: Duration,
    /// Most members a node tracks; beyond it new ones are ignored and counted.
    pub max_members: usize,
    /// Most datagrams queued for sending; beyond it new ones are dropped and counted.
    pub max_outbox: usize,
    /// Peers each new change is pushed to.
    pub fanout: usize,
    /// How long new changes gather before they are pushed together.
    pub push_delay: Duration,
    /// How often a node runs anti-entropy with one random peer.
    pub sync_interval: Duration,
    /// How often it does so while it has applied a change within
    /// `hot_window`: the few nodes a push missed are found sooner, and an
    /// idle mesh still pays one round per `sync_interval`.
    pub hot_sync_interval: Duration,
    /// How long after applying a change a node syncs at `hot_sync_interval`.
    pub hot_window: Duration,
    /// How far ahead of this node's clock a peer's timestamp may be.
    pub max_clock_drift: Duration,
    /// Target size of one replication message.
    pub max_part: usize,
    /// Whether tombstones are collected, by a horizon every registered
    /// node agreed on (see `replication::gc` and ARCHITECTURE.md).
    pub collect_tombstones: bool,
    /// How long a tombstone is kept at least; candidate horizons are this
    /// far behind the clock, rounded down to a quarter of it.
    pub tombstone_grace: Duration,
    /// How long a registered node may stay unseen (down, left, unknown)
    /// before it no longer holds collection back. If it returns later it
    /// drops what it held below the horizon, writes only it had included.
    pub reap_after: Duration,
    /// Longest key.
    pub max_key: usize,
    /// Largest value.
    pub max_value: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down_after: Duration::from_millis(1000),
            gossip_period: Duration::from_millis(200),
            announce_down_period: Duration::from_secs(2),
            tick: Duration::from_millis(500),
            forget_after: Duration::from_secs(72 * 3600),
            max_members: 4096,
            max_outbox: 8192,
            fanout: 4,
            push_delay: Duration::from_millis(10),
            sync_interval: Duration::from_secs(1),
            hot_sync_interval: Duration::from_millis(200),
            hot_window: Duration::from_secs(2),
            max_clock_drift: Duration::from_secs(30),
            max_part: 1024 * 1024,
            collect_tombstones: true,
            tombstone_grace: Duration::from_secs(3600),
            reap_after: Duration::from_secs(24 * 3600),
            max_key: 512,
            max_value: 64 * 1024,
        }
    }
}

/// Bytes a Swim frame adds around foca's packet: the enum tag and a length.
const SWIM_FRAME_OVERHEAD: usize = 4;

impl Config {
    pub(crate) fn foca(&self, cluster_size: usize) -> foca::Config {
        let size = std::num::NonZeroU32::new(cluster_size.clamp(1, u32::MAX as usize) as u32)
            .expect("clamped to at least 1");
        let mut c = foca::Config::new_lan(size);
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down_after;
        c.max_packet_size =
            NonZeroUsize::new(MAX_PLAINTEXT - SWIM_FRAME_OVERHEAD).expect("positive");
        c.max_transmissions = c
            .max_transmissions
            .max(NonZeroU8::new(6).expect("positive"));
        c.remove_down_after = Some(self.forget_after);
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: NonZeroUsize::new(3).expect("positive"),
        });
        // Membership push-pull (`membership::pushpull`) does what foca's
        // periodic announce does, discovery, deterministically and faster.
        c.periodic_announce = None;
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_down_period,
            num_members: NonZeroUsize::new(2).expect("positive"),
        });
        c
    }
}
