//! What a passing run measured, and the digest that proves two runs equal.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::Dur;

/// The figures of a run that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The run's settings, as printed by [`crate::SimConfig`]'s `Display`.
    pub config: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Virtual time simulated, all phases.
    pub virtual_time: Duration,
    /// Wall-clock time the run took (the only figure that varies between
    /// identical runs; it is not part of the digest).
    pub wall: Duration,
    /// Datagram counts.
    pub traffic: Traffic,
    /// Time from the first start until every node agreed on membership.
    pub formation: Duration,
    /// Time from the first start until 99% of the ordered pairs of nodes
    /// saw each other up (the bulk of the formation, without stragglers).
    pub formation_99: Duration,
    /// Time from the heal until every node agreed on membership.
    pub convergence: Duration,
    /// Downs of running nodes during the settle window: echoes of the
    /// faults, decided before the heal and still gossiped after it.
    pub echo_downs: u64,
    /// How fast stopped nodes were declared down.
    pub detection: Detection,
    /// Bytes sent per live node per virtual second during the idle window.
    pub idle_bytes_per_node_sec: f64,
    /// Datagrams sent per live node per virtual second during the idle window.
    pub idle_datagrams_per_node_sec: f64,
    /// Node stops during the safety phase (crashes and graceful leaves).
    pub stops: u64,
    /// Node restarts, safety and liveness phases.
    pub restarts: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Members declared down, all nodes, all phases.
    pub downs: u64,
    /// Of those, declarations about a node that was running in that life
    /// (caused by loss or partitions; zero in a run with no fault).
    pub false_downs: u64,
    /// Datagrams and stream messages the nodes refused, by the core's reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// Replicated state: writes, propagation, convergence, stream traffic.
    pub state: StateReport,
    /// Hash of every delivery (time, sender, receiver, size), of the final
    /// membership and of the final state digest of every node: equal
    /// digests, equal runs.
    pub digest: u64,
}

/// What replicated state did in a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateReport {
    /// Writes made (deletes included).
    pub writes: u64,
    /// Of those, deletes.
    pub deletes: u64,
    /// Writes made durable, and so acknowledged.
    pub acked: u64,
    /// Writes lost to a crash before they were durable (never acknowledged).
    pub torn: u64,
    /// Writes a restarted node stamped below a timestamp it had issued in
    /// an earlier life (to a torn write, since its clock restarts from its
    /// disk). Allowed, but if that torn write spread, it wins over this
    /// later, acknowledged one.
    pub stamped_behind: u64,
    /// Tombstones collected, all nodes.
    pub collected: u64,
    /// Versions dropped by nodes found behind a collection horizon they
    /// had no part in (refilled from peers), all nodes.
    pub dropped: u64,
    /// How far, at most, a node's hybrid clock ran ahead of its own
    /// physical clock, in ms: observing a faster peer pulls it forward, up
    /// to `max_clock_drift`.
    pub clock_lead_ms: u64,
    /// Entries (tombstones included) and tombstones held at the end, by
    /// the first running node.
    pub entries: usize,
    /// Tombstones held at the end, by the first running node.
    pub tombstones: usize,
    /// Time until every running node held each write made in a calm stretch.
    pub propagation: Propagation,
    /// Time from the heal until every running node held identical state;
    /// `None` when the run had no state (no workload and nothing written).
    pub convergence: Option<Duration>,
    /// Stream message counts (`duplicated` stays zero: streams never duplicate).
    pub messages: Traffic,
    /// Stream bytes (payload, without TLS and length prefix) sent per live
    /// node per virtual second during the idle window.
    pub idle_bytes_per_node_sec: f64,
    /// Stream messages sent per live node per virtual second during the idle window.
    pub idle_messages_per_node_sec: f64,
}

/// How long writes took to reach every running node. Timed are the writes
/// of the safety phase made while every node ran and no partition cut the
/// network (loss may be on); a write still spreading when a node stops or
/// starts, or a partition begins, is abandoned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Propagation {
    /// Writes timed to the end.
    pub measured: u64,
    /// Writes whose timing was interrupted by a fault, or never finished.
    pub abandoned: u64,
    /// Median.
    pub p50: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// Slowest.
    pub max: Option<Duration>,
}

impl Propagation {
    pub(crate) fn from_samples(samples: &[Duration], abandoned: u64) -> Propagation {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = |q: f64| {
            let n = sorted.len();
            (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        Propagation {
            measured: sorted.len() as u64,
            abandoned,
            p50: rank(0.5),
            p99: rank(0.99),
            max: sorted.last().copied(),
        }
    }
}

/// What the virtual network did with the datagrams.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams the nodes sent.
    pub sent: u64,
    /// Bytes the nodes sent.
    pub bytes_sent: u64,
    /// Datagrams handed to a running node (duplicates included).
    pub delivered: u64,
    /// Lost at random.
    pub lost: u64,
    /// Cut by a partition.
    pub blocked: u64,
    /// Arrived at a stopped node.
    pub to_stopped: u64,
    /// Sent to an address no node has.
    pub to_nowhere: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
}

impl Traffic {
    /// All datagrams that did not arrive.
    pub fn dropped(&self) -> u64 {
        self.lost + self.blocked + self.to_stopped + self.to_nowhere
    }
}

/// Detection times of stopped nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detection {
    /// Nodes stopped during the safety phase.
    pub stops: u64,
    /// Stops noticed by every witness, and so measured.
    pub measured: u64,
    /// Stops not measured: a partition began or the node restarted first.
    pub abandoned: u64,
    /// The slowest measured detection (until the last witness noticed).
    pub max: Option<Duration>,
    /// Sum of measured detections, for the mean.
    pub total: Duration,
}

impl Detection {
    pub(crate) fn record(&mut self, took: Duration) {
        self.measured += 1;
        self.total += took;
        self.max = self.max.max(Some(took));
    }

    /// Mean of the measured detections.
    pub fn mean(&self) -> Option<Duration> {
        (self.measured > 0).then(|| self.total / self.measured as u32)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.traffic;
        writeln!(f, "{}", self.config)?;
        writeln!(
            f,
            "ok: virtual {} in wall {:.2}s; digest {:016x}",
            Dur(self.virtual_time),
            self.wall.as_secs_f64(),
            self.digest
        )?;
        writeln!(
            f,
            "  formation {} (99% of pairs {}), convergence after heal {}, then {} echo downs",
            Dur(self.formation),
            Dur(self.formation_99),
            Dur(self.convergence),
            self.echo_downs
        )?;
        let d = &self.detection;
        let opt = |x: Option<Duration>| x.map_or("-".to_string(), |x| Dur(x).to_string());
        writeln!(
            f,
            "  detection: {} stops, {} measured, {} abandoned, max {}, mean {}",
            d.stops,
            d.measured,
            d.abandoned,
            opt(d.max),
            opt(d.mean())
        )?;
        writeln!(
            f,
            "  datagrams: {} sent ({} bytes), {} delivered, {} dropped (lost {}, partition {}, to stopped {}, to nowhere {}), {} duplicated",
            t.sent,
            t.bytes_sent,
            t.delivered,
            t.dropped(),
            t.lost,
            t.blocked,
            t.to_stopped,
            t.to_nowhere,
            t.duplicated
        )?;
        writeln!(
            f,
            "  faults: {} stops, {} restarts, {} partitions; {} downs of which {} of running nodes",
            self.stops, self.restarts, self.partitions, self.downs, self.false_downs
        )?;
        writeln!(
            f,
            "  idle: {:.0} bytes/node/s, {:.1} datagrams/node/s",
            self.idle_bytes_per_node_sec, self.idle_datagrams_per_node_sec
        )?;
        writeln!(f, "{}", self.state)?;
        // A run that passed refused only for reasons its faults explain
        // (any other reason fails it): say so, so a reader need not wonder.
        if self.refused.is_empty() {
            return write!(f, "  refused by nodes: none");
        }
        let counts: Vec<String> = self
            .refused
            .iter()
            .map(|(reason, n)| format!("{reason} {n} ({})", why_refused(reason)))
            .collect();
        write!(
            f,
            "  refused by nodes, all expected under these faults: {}",
            counts.join(", ")
        )
    }
}

/// Why a passing run's nodes refused datagrams for `reason`.
fn why_refused(reason: &str) -> &'static str {
    match reason {
        "replay" => "duplicated datagrams",
        "unknown_sender" => "from nodes not yet known or restarted",
        "behind_horizon" => "tombstones older than the collected horizon",
        "clock_drift" => "writes from a node whose clock runs too far ahead",
        _ => "explained by this run's faults",
    }
}

impl fmt::Display for StateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |x: Option<Duration>| x.map_or("-".to_string(), |x| Dur(x).to_string());
        writeln!(
            f,
            "  state: {} writes ({} deletes), {} acked, {} torn, {} stamped behind a torn one; {} tombstones collected, {} versions dropped to refill; at the end {} entries, {} tombstones; identical {} after heal",
            self.writes,
            self.deletes,
            self.acked,
            self.torn,
            self.stamped_behind,
            self.collected,
            self.dropped,
            self.entries,
            self.tombstones,
            opt(self.convergence)
        )?;
        let p = &self.propagation;
        writeln!(
            f,
            "  clocks: hybrid clock at most {}ms ahead of its node's own clock",
            self.clock_lead_ms
        )?;
        writeln!(
            f,
            "  propagation to all: {} timed, {} abandoned; p50 {} p99 {} max {}",
            p.measured,
            p.abandoned,
            opt(p.p50),
            opt(p.p99),
            opt(p.max)
        )?;
        let m = &self.messages;
        writeln!(
            f,
            "  messages: {} sent ({} bytes), {} delivered, {} dropped (lost {}, partition {}, to stopped {}, to nowhere {})",
            m.sent,
            m.bytes_sent,
            m.delivered,
            m.dropped(),
            m.lost,
            m.blocked,
            m.to_stopped,
            m.to_nowhere
        )?;
        write!(
            f,
            "  idle streams: {:.0} bytes/node/s, {:.1} messages/node/s",
            self.idle_bytes_per_node_sec, self.idle_messages_per_node_sec
        )
    }
}

/// FNV-1a over 64-bit words: stable across Rust versions and platforms,
/// unlike `DefaultHasher`, so digests can be compared between machines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Digest(u64);

impl Digest {
    pub(crate) fn new() -> Digest {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn add(&mut self, word: u64) {
        for b in word.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn value(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_order_and_content() {
        let mut a = Digest::new();
        a.add(1);
        a.add(2);
        let mut b = Digest::new();
        b.add(2);
        b.add(1);
        assert_ne!(a.value(), b.value());
        let mut c = Digest::new();
        c.add(1);
        c.add(2);
        assert_eq!(a.value(), c.value());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = Duration::from_millis;
        let samples: Vec<Duration> = (1..=200).rev().map(ms).collect();
        let p = Propagation::from_samples(&samples, 3);
        assert_eq!((p.measured, p.abandoned), (200, 3));
        assert_eq!(
            (p.p50, p.p99, p.max),
            (Some(ms(100)), Some(ms(198)), Some(ms(200)))
        );
        assert_eq!(Propagation::from_samples(&[], 0).p99, None);
        assert_eq!(Propagation::from_samples(&[ms(7)], 0).p50, Some(ms(7)));
    }

    #[test]
    fn detection_keeps_max_and_mean() {
        let mut d = Detection::default();
        assert_eq!(d.mean(), None);
        d.record(Duration::from_secs(1));
        d.record(Duration::from_secs(3));
        assert_eq!(d.max, Some(Duration::from_secs(3)));
        assert_eq!(d.mean(), Some(Duration::from_secs(2)));
    }
}
