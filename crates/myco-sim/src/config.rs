//! What one run looks like: cluster size, network model, faults and the
//! budgets the checkers hold it to. [`SimConfig::from_seed`] picks it all
//! from the seed; the `Display` form prints every setting, so a failing run
//! is reproduced from its first line.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The settings of one simulated run. Every field is public so a caller
/// (the `myco sim` CLI, a test) can start from a preset and override it.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice of the run.
    pub seed: u64,
    /// How many nodes the cluster has.
    pub nodes: usize,
    /// Latency, jitter, loss and duplication.
    pub net: NetConfig,
    /// Partitions and crashes injected during the safety phase.
    pub faults: FaultPlan,
    /// Virtual length of the safety phase (faults on).
    pub safety: Duration,
    /// Virtual time after the first agreement that follows the heal, during
    /// which echoes of the faults (downs decided before the heal and still
    /// gossiped) may still make members flap; the nodes must agree again at
    /// its end.
    pub settle: Duration,
    /// Virtual length of the quiet window after the settle window, where
    /// idle traffic is measured and membership must stay put.
    pub idle: Duration,
    /// Joins of the first start are spread uniformly over this window.
    pub join_spread: Duration,
    /// How often faults are decided and membership is compared; also the
    /// precision of the formation and convergence times.
    pub step: Duration,
    /// How long each phase may take before the run fails. The constructors
    /// derive it from `nodes` and `core`; after changing either, recompute it
    /// with [`Budgets::for_cluster`].
    pub budgets: Budgets,
    /// The core's tunables, the same for every node.
    pub core: myco_core::Config,
    /// Writes the events of this node, the faults and the phases to stderr
    /// with their virtual time: for reproducing a failure, never in tests.
    pub trace: Option<usize>,
    /// Random writes to replicated state during formation and safety; none
    /// if `None` (membership alone is simulated then, faster).
    pub workload: Option<Workload>,
    /// Offset of each node's clock from virtual time, in ms (node index
    /// order; nodes beyond the list have none). A node is fed `now + skew`
    /// as its time, so it stamps its writes with a skewed hybrid clock.
    /// A clock more than `core.max_clock_drift` ahead of another has its
    /// writes refused there for a while (see [`SimConfig::clock_excess`]).
    pub skew_ms: Vec<i64>,
    /// How fast each node's clock runs against virtual time, in parts per
    /// million (node index order; none beyond the list): `+10000` reads
    /// 1.01 s per virtual second. Leases are timed by local clocks, so
    /// a rate (not an offset) is what can break them.
    pub drift_ppm: Vec<i64>,
    /// How long after a local write a node's disk commits it (the store's
    /// fsync). Only then is the write acknowledged and sent to peers; a
    /// crash before tears it. Faults strike between steps, so a longer
    /// fsync tears more writes.
    pub fsync: Duration,
}

/// The fsync of [`SimConfig::no_faults`] and [`SimConfig::from_seed`]:
/// below the core's push delay, so waiting for it delays no push.
pub const DEFAULT_FSYNC: Duration = Duration::from_millis(5);

/// The writes of a run: each goes to a random running node, at random
/// times, on a small key space so overwrites and deletes conflict.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Mean writes per virtual second, the whole cluster together.
    pub per_sec: f64,
    /// Keys are `k0` to `k{keys - 1}`.
    pub keys: usize,
    /// Probability a write deletes its key.
    pub deletes: f64,
    /// Values are 1 to this many bytes.
    pub max_value: usize,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            per_sec: 5.0,
            keys: 32,
            deletes: 0.2,
            max_value: 16,
        }
    }
}

/// The virtual network.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way latency every datagram pays.
    pub latency: Duration,
    /// Extra delay drawn per datagram in `0..=jitter`; it reorders datagrams.
    pub jitter: Duration,
    /// Probability a datagram is lost (safety phase only).
    pub loss: f64,
    /// Probability a datagram arrives twice (safety phase only).
    pub duplicate: f64,
    /// Probability a stream message is lost, standing for a broken
    /// connection (safety phase only). [`SimConfig::from_seed`] sets it to
    /// `loss`; a real TCP connection mostly retransmits instead, which
    /// `0.0` models.
    pub stream_loss: f64,
}

/// The faults of the safety phase: random ones drawn as the run goes, and
/// scripted ones at fixed times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Random partitions, if any.
    pub partitions: Option<PartitionPlan>,
    /// Random crashes and restarts, if any.
    pub crashes: Option<CrashPlan>,
    /// Faults at fixed times after the safety phase starts.
    pub script: Vec<(Duration, Fault)>,
}

/// How random partitions come and go. At most one partition exists at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionPlan {
    /// Time without a partition before the next one, drawn in this range.
    pub gap: (Duration, Duration),
    /// How long a partition lasts, drawn in this range.
    pub length: (Duration, Duration),
    /// Probability a partition blocks one direction only.
    pub one_way: f64,
}

/// How random crashes come and go.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashPlan {
    /// Mean crashes per virtual minute, cluster-wide.
    pub per_minute: f64,
    /// How long a crashed node stays down before it restarts, drawn in this range.
    pub downtime: (Duration, Duration),
    /// Probability a stop is graceful: the node leaves first.
    pub graceful: f64,
    /// Probability a stopped node never comes back, not even in the liveness phase.
    pub permanent: f64,
    /// Most nodes down at once.
    pub max_down: usize,
    /// Probability a crash strikes a node whose last writes are not yet
    /// durable, when there is one. Writes are durable within a step, so a
    /// victim drawn uniformly would rarely tear one; this makes torn writes
    /// common enough to matter.
    pub tear: f64,
}

/// One scripted fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Node `node` stops; gracefully (after leaving) or not. It restarts
    /// after `restart_after`, or at the liveness phase if `None`.
    Stop {
        /// Index of the node (0-based).
        node: usize,
        /// Whether the node leaves before stopping.
        graceful: bool,
        /// Downtime before the restart.
        restart_after: Option<Duration>,
    },
    /// The nodes in `side` are cut from the others for `length`; if
    /// `one_way`, only datagrams from `side` to the others are lost.
    Partition {
        /// Indexes of the nodes on one side.
        side: Vec<usize>,
        /// Whether only one direction is cut.
        one_way: bool,
        /// How long the partition lasts.
        length: Duration,
    },
}

/// Virtual-time budgets; a phase that overruns its budget fails the run.
#[derive(Clone, Debug, PartialEq)]
pub struct Budgets {
    /// From the first start until every node agrees on membership.
    pub formation: Duration,
    /// From the heal (liveness phase start) until every node agrees.
    pub convergence: Duration,
    /// From a crash until every live node that saw the node alive declares
    /// it down (or left).
    pub detection: Duration,
    /// From the heal until every running node holds identical replicated
    /// state (same digest).
    pub state: Duration,
}

impl Budgets {
    /// Budgets for a cluster of `nodes` running the core with `core`.
    ///
    /// Agreement (formation and convergence): 30 s for dissemination and
    /// the re-announces of healed partitions (every 2 s), plus two probe
    /// rounds (a round is `nodes × probe_period`: 30 s at 100 nodes, 300 s
    /// at 1000). The rounds are there because SWIM's gossip misses a few
    /// pairs in a large join (each update is sent a bounded number of
    /// times, so a node misses it with probability about
    /// e^-max_transmissions); such a pair learns of each other only when one
    /// probes the other, and probes go round-robin in an order reshuffled
    /// every round, so up to two rounds apart. Measured with no fault: 21 to
    /// 44 s at 100 nodes (40 seeds), 283 and 293 s at 1000 (2 seeds); 99% of
    /// the pairs agree within 11 s in every case.
    ///
    /// Detection: one probe round plus the suspicion timeout, plus 10 s for
    /// dissemination: a witness normally learns from gossip, and one that
    /// missed it notices on its own probe.
    ///
    /// State: membership must agree first (a node syncs only with members
    /// it sees alive), then anti-entropy needs about log2(n) rounds of
    /// `sync_interval` to carry a difference everywhere, since every
    /// exchange repairs a pair completely; 20 rounds more covers 1000
    /// nodes with room for unlucky peer choices.
    pub fn for_cluster(nodes: usize, core: &myco_core::Config) -> Budgets {
        let round = core.probe_period * nodes as u32;
        let agreement = Duration::from_secs(30) + 2 * round;
        Budgets {
            formation: agreement,
            convergence: agreement,
            detection: Duration::from_secs(10) + round + core.suspect_to_down_after,
            state: agreement + 20 * core.sync_interval,
        }
    }
}

/// Above this loss, with the core's default timings and latencies near the
/// probe timeout, members flap (false downs and rejoins every few seconds
/// were seen at 10 to 20% loss), so detection times are measured but not
/// judged.
pub const DETECTION_MAX_LOSS: f64 = 0.05;

/// Length of the safety phase when the caller does not set one.
const DEFAULT_SAFETY: Duration = Duration::from_secs(120);
/// Length of the settle window when the caller does not set one: echoes
/// of the faults were seen up to 7 s after the first agreement.
const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
/// Length of the idle window when the caller does not set one.
const DEFAULT_IDLE: Duration = Duration::from_secs(10);
/// Clocks are skewed by up to this much either way: what NTP leaves on a
/// LAN of small machines, far below the core's `max_clock_drift`.
pub const MAX_SKEW_MS: i64 = 500;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A probability with three decimals, so the printed value is the real one.
fn chance(rng: &mut StdRng, max_permille: u32) -> f64 {
    f64::from(rng.random_range(0..=max_permille)) / 1000.0
}

impl SimConfig {
    /// Picks every setting from `seed`: latency, jitter, loss, duplication,
    /// whether and how partitions and crashes happen.
    pub fn from_seed(seed: u64, nodes: usize) -> SimConfig {
        let mut rng = StdRng::seed_from_u64(seed);
        let net = NetConfig {
            latency: ms(rng.random_range(1..=40)),
            jitter: ms(rng.random_range(0..=30)),
            loss: if rng.random_bool(0.25) {
                0.0
            } else {
                chance(&mut rng, 200)
            },
            duplicate: if rng.random_bool(0.5) {
                0.0
            } else {
                chance(&mut rng, 50)
            },
            stream_loss: 0.0,
        };
        let net = NetConfig {
            stream_loss: net.loss,
            ..net
        };
        let partitions = rng.random_bool(0.7).then(|| PartitionPlan {
            gap: (
                secs(rng.random_range(2..=10)),
                secs(rng.random_range(10..=40)),
            ),
            length: (
                secs(rng.random_range(1..=5)),
                secs(rng.random_range(5..=30)),
            ),
            one_way: f64::from(rng.random_range(0..=4u32)) / 4.0,
        });
        let crashes = rng.random_bool(0.7).then(|| CrashPlan {
            per_minute: f64::from(rng.random_range(1..=12u32)) / 2.0,
            downtime: (
                secs(rng.random_range(1..=5)),
                secs(rng.random_range(5..=40)),
            ),
            graceful: chance(&mut rng, 500),
            permanent: chance(&mut rng, 200),
            max_down: rng.random_range(1..=(nodes / 3).max(1)),
            tear: 0.0,
        });
        // Drawn after everything above, so the membership settings a seed
        // picked before state was simulated stay the same.
        let mut crashes = crashes;
        if let Some(c) = &mut crashes {
            c.tear = f64::from(rng.random_range(0..=4u32)) / 4.0;
        }
        let workload = Workload {
            per_sec: f64::from(rng.random_range(1..=10u32)),
            keys: rng.random_range(4..=64),
            deletes: chance(&mut rng, 500),
            max_value: 16,
        };
        let mut base = SimConfig::no_faults(nodes, seed);
        // A third of the seeds collect tombstones within seconds, so GC
        // runs while faults do.
        if rng.random_bool(0.3) {
            base.core.tombstone_grace = secs(rng.random_range(1..=10));
        }
        // A third have a slow disk (an SD card), so crashes find writes
        // not yet durable to tear.
        if rng.random_bool(0.3) {
            base.fsync = ms(rng.random_range(20..=150));
        }
        SimConfig {
            seed,
            nodes,
            net,
            faults: FaultPlan {
                partitions,
                crashes,
                script: Vec::new(),
            },
            workload: Some(workload),
            ..base
        }
    }

    /// A run with no fault at all: no loss, no duplication, no partition, no
    /// crash, and latency plus jitter far below the probe timeout. No live
    /// node may ever declare another live node down.
    pub fn no_faults(nodes: usize, seed: u64) -> SimConfig {
        let mut rng = StdRng::seed_from_u64(seed);
        let core = myco_core::Config::default();
        let net = NetConfig {
            latency: ms(rng.random_range(1..=5)),
            jitter: ms(rng.random_range(0..=5)),
            loss: 0.0,
            duplicate: 0.0,
            stream_loss: 0.0,
        };
        SimConfig {
            seed,
            nodes,
            net,
            faults: FaultPlan::default(),
            safety: DEFAULT_SAFETY,
            settle: DEFAULT_SETTLE,
            idle: DEFAULT_IDLE,
            join_spread: secs(1),
            step: ms(100),
            budgets: Budgets::for_cluster(nodes, &core),
            core,
            trace: None,
            workload: Some(Workload::default()),
            skew_ms: (0..nodes)
                .map(|_| rng.random_range(-MAX_SKEW_MS..=MAX_SKEW_MS))
                .collect(),
            drift_ppm: Vec::new(),
            fsync: DEFAULT_FSYNC,
        }
    }

    /// Every node joins through node 0 within the first second, with no
    /// fault; the run ends once all agree. [`crate::Report::formation`] is the
    /// time to agreement.
    /// No writes and no skew: the storm measures membership alone, and
    /// 1000 nodes stay affordable.
    pub fn join_storm(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            safety: Duration::ZERO,
            settle: Duration::ZERO,
            workload: None,
            skew_ms: Vec::new(),
            ..SimConfig::no_faults(nodes, seed)
        }
    }

    /// Whether the run injects no fault, so a live node declaring another
    /// live node down is a bug, not bad luck.
    pub fn is_quiet(&self) -> bool {
        self.net.loss == 0.0
            && self.net.duplicate == 0.0
            && self.net.stream_loss == 0.0
            && self.faults.partitions.is_none()
            && self.faults.crashes.is_none()
            && self
                .faults
                .script
                .iter()
                .all(|(_, f)| !matches!(f, Fault::Partition { .. }))
    }

    /// The detection budget if it applies to this run's network.
    pub fn detection_budget(&self) -> Option<Duration> {
        (self.net.loss <= DETECTION_MAX_LOSS).then_some(self.budgets.detection)
    }

    /// Whether a probe and its reply always come back before the probe
    /// timeout; if not, suspicions of live nodes are expected.
    pub fn is_prompt(&self) -> bool {
        2 * (self.net.latency + self.net.jitter) < self.core.probe_rtt
    }

    /// The clock rate of node `i` against virtual time, in ppm.
    pub fn drift(&self, i: usize) -> i64 {
        self.drift_ppm.get(i).copied().unwrap_or(0)
    }

    /// The clock offset of node `i`, in ms.
    pub fn skew(&self, i: usize) -> i64 {
        self.skew_ms.get(i).copied().unwrap_or(0)
    }

    /// How far the fastest clock runs beyond `max_clock_drift` ahead of
    /// the slowest one (zero in a sane mesh). A node refuses a timestamp
    /// that far ahead of its own clock (counted as `clock_drift`), but
    /// anti-entropy offers it again every round, so it is taken once the
    /// refusing clock has caught up: replicas converge this much later.
    pub fn clock_excess(&self) -> Duration {
        let skews = (0..self.nodes).map(|i| self.skew(i));
        let spread = skews.clone().max().unwrap_or(0) - skews.min().unwrap_or(0);
        let bound = self.core.max_clock_drift.as_millis() as i64;
        Duration::from_millis((spread - bound).max(0) as u64)
    }
}

/// Writes a duration as `1.5s` or `250ms`.
pub(crate) struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms >= 1000 && ms.is_multiple_of(100) {
            write!(f, "{}s", self.0.as_secs_f64())
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl fmt::Display for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed={} nodes={} safety={} settle={} idle={} join_spread={} step={}",
            self.seed,
            self.nodes,
            Dur(self.safety),
            Dur(self.settle),
            Dur(self.idle),
            Dur(self.join_spread),
            Dur(self.step)
        )?;
        let n = &self.net;
        writeln!(
            f,
            "  net: latency={} jitter=0..={} loss={:.3} duplicate={:.3} stream_loss={:.3}",
            Dur(n.latency),
            Dur(n.jitter),
            n.loss,
            n.duplicate,
            n.stream_loss
        )?;
        match &self.faults.partitions {
            Some(p) => writeln!(
                f,
                "  partitions: gap={}..{} length={}..{} one_way={:.2}",
                Dur(p.gap.0),
                Dur(p.gap.1),
                Dur(p.length.0),
                Dur(p.length.1),
                p.one_way
            )?,
            None => writeln!(f, "  partitions: none")?,
        }
        match &self.faults.crashes {
            Some(c) => writeln!(
                f,
                "  crashes: {:.1}/min downtime={}..{} graceful={:.3} permanent={:.3} max_down={} tear={:.2}",
                c.per_minute,
                Dur(c.downtime.0),
                Dur(c.downtime.1),
                c.graceful,
                c.permanent,
                c.max_down,
                c.tear
            )?,
            None => writeln!(f, "  crashes: none")?,
        }
        for (at, fault) in &self.faults.script {
            writeln!(f, "  script: +{} {fault:?}", Dur(*at))?;
        }
        match &self.workload {
            Some(w) => writeln!(
                f,
                "  workload: {}/s keys={} deletes={:.3} max_value={}",
                w.per_sec, w.keys, w.deletes, w.max_value
            )?,
            None => writeln!(f, "  workload: none")?,
        }
        if !self.skew_ms.is_empty() {
            let skews: Vec<String> = self.skew_ms.iter().map(|s| format!("{s:+}")).collect();
            write!(f, "  clocks: skew_ms=[{}]", skews.join(" "))?;
            let excess = self.clock_excess();
            if !excess.is_zero() {
                write!(f, " ({} beyond max_clock_drift)", Dur(excess))?;
            }
            writeln!(f)?;
        }
        if self.fsync != DEFAULT_FSYNC {
            writeln!(f, "  disk: fsync={}", Dur(self.fsync))?;
        }
        let b = &self.budgets;
        write!(
            f,
            "  budgets: formation={} convergence={} detection={} state={}",
            Dur(b.formation),
            Dur(b.convergence),
            Dur(b.detection),
            Dur(b.state)
        )?;
        if self.detection_budget().is_none() {
            write!(f, " (not judged: loss above {DETECTION_MAX_LOSS})")?;
        }
        if self.core != myco_core::Config::default() {
            write!(f, "\n  core: {:?}", self.core)?;
        }
        if let Some(node) = self.trace {
            write!(f, "\n  trace: n{node}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_picks_the_settings_and_they_are_printed() {
        let a = SimConfig::from_seed(7, 10).to_string();
        assert_eq!(a, SimConfig::from_seed(7, 10).to_string());
        assert!(a.starts_with("seed=7 nodes=10 "), "{a}");
        let differ = (0..20)
            .any(|s| SimConfig::from_seed(s, 10).to_string().lines().nth(1) != a.lines().nth(1));
        assert!(differ, "seeds must vary the network");
    }

    #[test]
    fn no_faults_is_quiet_and_prompt() {
        for seed in 0..50 {
            let c = SimConfig::no_faults(10, seed);
            assert!(c.is_quiet() && c.is_prompt(), "{c}");
        }
        assert!((0..50).any(|s| !SimConfig::from_seed(s, 10).is_quiet()));
    }

    #[test]
    fn budgets_grow_with_the_probe_round() {
        let core = myco_core::Config::default();
        assert_eq!(Budgets::for_cluster(10, &core).convergence, secs(36));
        assert_eq!(Budgets::for_cluster(100, &core).convergence, secs(90));
        assert_eq!(Budgets::for_cluster(1000, &core).formation, secs(630));
        assert_eq!(Budgets::for_cluster(100, &core).detection, secs(41));
    }

    #[test]
    fn skews_are_seeded_bounded_printed_and_off_in_storms() {
        let c = SimConfig::from_seed(9, 10);
        assert_eq!(c.skew_ms, SimConfig::from_seed(9, 10).skew_ms);
        assert_eq!(c.skew_ms.len(), 10);
        assert!(c.skew_ms.iter().all(|s| s.abs() <= MAX_SKEW_MS));
        assert!(c.clock_excess().is_zero());
        let text = c.to_string();
        assert!(
            text.contains(&format!("skew_ms=[{:+} ", c.skew_ms[0])),
            "{text}"
        );
        assert!(c.workload.is_some() && SimConfig::no_faults(3, 1).workload.is_some());
        let storm = SimConfig::join_storm(10, 1);
        assert!(storm.skew_ms.is_empty() && storm.workload.is_none());
        assert_eq!(storm.skew(4), 0);
    }

    #[test]
    fn a_clock_beyond_the_drift_bound_is_excess() {
        let mut c = SimConfig::no_faults(3, 1);
        c.skew_ms = vec![-500, 0, 31_000];
        assert_eq!(c.clock_excess(), ms(1500));
        assert!(c.to_string().contains("(1.5s beyond max_clock_drift)"));
    }

    #[test]
    fn detection_is_judged_only_on_a_mild_network() {
        let mut c = SimConfig::no_faults(10, 1);
        assert_eq!(c.detection_budget(), Some(c.budgets.detection));
        c.net.loss = 0.1;
        assert_eq!(c.detection_budget(), None);
        assert!(c.to_string().contains("not judged"));
    }
}
