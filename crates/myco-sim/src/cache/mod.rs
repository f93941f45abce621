//! Cache ownership under membership changes: the core's pure functions
//! (`myco_core::cache::{owners, moves, handoff}`, `CacheStore`) driven by
//! a model of the agent's shell (`myco_agent::cache`: writes to the
//! owners in the writer's view, acknowledged by two; the rebalancer that
//! compares views every 500 ms, sends moved entries and drops what it no
//! longer owns a grace later, unless a copy arrived meanwhile; the
//! periodic pass over strays).
//!
//! Nodes join, crash and leave (a node's entries live in memory, so a
//! stopped node comes back empty); each node learns of a change after
//! its own delay, so writers and movers act on different views for a
//! while. Stream messages take 1 to 30 ms, in order per pair, and are
//! lost with their sender's or receiver's life. After the changes stop
//! and everything settles, [`run_cache`] checks:
//! - **placement**: every key held anywhere is held by exactly its owners
//!   under the final members, and the newest version, when it is of an
//!   acknowledged write, by two of them (or all, if fewer), as a write is
//!   acknowledged (other differences are for reads to repair, see
//!   `cache::repair`);
//! - **durability**: the newest acknowledged write of a key whose owners
//!   (under every membership since the write) and whose acknowledging
//!   nodes all stayed up is still held, or a newer version. With
//!   `graceful`, half the leaves (and one among the last writes) are
//!   graceful stops (`cache::leave`, modelled in `leave.rs`): the node
//!   hands its entries over and passes on what it stores until it is
//!   gone, and an owner that left so counts as staying up, when no node
//!   crashed since the write (a hand-over to a node that crashed unseen
//!   is lost). A stop begun on an out-of-date view hands over to the
//!   owners that view names; the owners that hold it pass a version new
//!   to them on to the members a change added, for a grace after their
//!   walk for it (`late_versions`). The ignored sweep in
//!   `tests/cache.rs` runs 1,000 seeds both ways; 5,000 with graceful
//!   stops passed by hand too.
//!
//! Not modelled: reads (their read-repair only adds copies to owners),
//! TTL and LRU (they only remove), paging of moves (bandwidth only).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use myco_core::cache::CacheStore;
use myco_proto::NodeId;
use myco_proto::cache::CacheEntry;
use myco_proto::state::Timestamp;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

mod check;
mod leave;
mod shell;

const BUCKET: &str = "b";
/// The agent's `rebalance::PERIOD`, `GRACE` and stray pass, in ms.
const PERIOD: u64 = 500;
const GRACE: u64 = 10_000;
const STRAY_EVERY: u64 = 30_000;

/// One run's settings, all drawn from the seed.
#[derive(Clone, Debug)]
pub struct CacheSimConfig {
    /// The seed.
    pub seed: u64,
    /// Nodes that exist (up or not).
    pub nodes: usize,
    /// Nodes up at the start.
    pub initial: usize,
    /// Distinct keys written.
    pub keys: usize,
    /// Membership changes.
    pub changes: usize,
    /// Copies per key.
    pub replicas: u8,
    /// Longest a node takes to see a membership change, ms.
    pub max_view_lag: u64,
    /// Model the fixes (re-check ownership when a grace ends and hand the
    /// entry over; the stray pass; compare members with their lives, so a
    /// quick restart counts as a join); `false` models the rebalancer
    /// before them, which the checks must catch.
    pub handoff: bool,
    /// Make half the leaves graceful stops that hand their entries over
    /// (`cache::leave`); `false` keeps every seed's run as it was.
    pub graceful: bool,
    /// A graceful stop hands nothing to members whose process has ended
    /// (the agent's connections to them are refused), and gives their
    /// keys to the next member in the ranking; `false` models the
    /// hand-over before, which sent them copies lost with them.
    pub skip_ended: bool,
    /// For a grace after a walk for a change, a version a node stores
    /// from another node (not its own write) also goes to the owners the
    /// change added (`Cache::stored`): a writer or a stopping node with
    /// an older view did not send it there, and the walk has passed;
    /// `false` models the agent before.
    pub late_versions: bool,
}

impl CacheSimConfig {
    /// The settings of `seed`.
    pub fn from_seed(seed: u64) -> CacheSimConfig {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xcac4e);
        let nodes = rng.random_range(3..=7);
        CacheSimConfig {
            seed,
            nodes,
            initial: rng.random_range(2..=nodes),
            keys: rng.random_range(5..=60),
            changes: rng.random_range(1..=8),
            replicas: rng.random_range(1..=3),
            max_view_lag: rng.random_range(50..=3000),
            handoff: true,
            graceful: false,
            skip_ended: true,
            late_versions: true,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct CacheReport {
    /// Writes acknowledged.
    pub acked: u64,
    /// Entries sent by moves and handoffs.
    pub moved: u64,
    /// Keys whose newest acknowledged write had to survive, and did.
    pub protected: u64,
    /// Membership changes made.
    pub changes: u64,
    /// Graceful stops that handed over (`graceful`).
    pub handed_over: u64,
}

#[derive(Clone, Debug)]
struct Put {
    key: String,
    entry: CacheEntry,
    /// The write it acknowledges, if any.
    write: Option<usize>,
}

struct SimNode {
    up: bool,
    life: u32,
    store: CacheStore,
    view: Vec<NodeId>,
    /// The view with each member's life, as the agent sees boots.
    lives: Vec<(NodeId, u64)>,
    before: Option<Vec<(NodeId, u64)>>,
    to_drop: VecDeque<(u64, String)>,
    /// The latest drop due for each key in `to_drop`, while no copy of
    /// it has arrived since (`rebalance::Drops`).
    dropping: BTreeMap<String, u64>,
    hlc: u64,
    /// Set while a graceful stop hands over: the members before and
    /// after it, as the node saw them when it began.
    leaving: Option<(Vec<NodeId>, Vec<NodeId>)>,
    /// The last walk for a change: until when versions stored go to the
    /// owners it added too, and the members before and after it.
    changed: Option<(u64, Vec<NodeId>, Vec<NodeId>)>,
}

struct Write {
    key: String,
    ts: Timestamp,
    need: usize,
    acks: usize,
    /// The nodes that acknowledged it: its durability rests on them
    /// (a writer with an old view may have written to a non-owner).
    ackers: Vec<usize>,
    at: u64,
}

enum Event {
    Deliver {
        from: usize,
        from_life: u32,
        to: usize,
        to_life: u32,
        put: Put,
    },
    View {
        node: usize,
        life: u32,
        view: Vec<(NodeId, u64)>,
    },
    Tick {
        node: usize,
        life: u32,
    },
    /// A leaving node's walk is acknowledged: it leaves the membership.
    Depart {
        node: usize,
        life: u32,
    },
    /// A node that left gracefully ends (what it sent is still delivered).
    Down {
        node: usize,
        life: u32,
    },
}

struct Sim {
    cfg: CacheSimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    ids: Vec<NodeId>,
    /// Membership over time: (from ms, members).
    history: Vec<(u64, BTreeSet<usize>)>,
    /// Who crashed or left without handing over, when.
    departed: Vec<(u64, usize)>,
    /// Who left the membership gracefully (their walk done), when.
    handed_over: Vec<(u64, usize)>,
    /// Lives that ended in a graceful stop: what they sent still arrives.
    graceful_lives: BTreeSet<(usize, u32)>,
    /// Draws whether a leave is graceful, apart from `rng`, so `graceful`
    /// off leaves every seed's run as it was.
    leave_rng: StdRng,
    writes: Vec<Write>,
    pair_last: BTreeMap<(usize, usize), u64>,
    view_last: Vec<u64>,
    report: CacheReport,
}

/// Runs `cfg`; `Err` names the broken rule, the key and the seed.
pub fn run_cache(cfg: &CacheSimConfig) -> Result<CacheReport, String> {
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    sim.check()
}

impl Sim {
    fn new(cfg: CacheSimConfig) -> Sim {
        let ids: Vec<NodeId> = (0..cfg.nodes)
            .map(|i| NodeId::from_u64(i as u64 + 1))
            .collect();
        let members: BTreeSet<usize> = (0..cfg.initial).collect();
        let view: Vec<NodeId> = members.iter().map(|i| ids[*i]).collect();
        let lives: Vec<(NodeId, u64)> = view.iter().map(|id| (*id, 0)).collect();
        let nodes = (0..cfg.nodes)
            .map(|i| SimNode {
                up: members.contains(&i),
                life: 0,
                store: CacheStore::new(usize::MAX),
                view: if members.contains(&i) {
                    view.clone()
                } else {
                    Vec::new()
                },
                lives: if members.contains(&i) {
                    lives.clone()
                } else {
                    Vec::new()
                },
                before: None,
                to_drop: VecDeque::new(),
                dropping: BTreeMap::new(),
                hlc: 0,
                leaving: None,
                changed: None,
            })
            .collect();
        let mut sim = Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            ids,
            history: vec![(0, members.clone())],
            departed: Vec::new(),
            handed_over: Vec::new(),
            graceful_lives: BTreeSet::new(),
            leave_rng: StdRng::seed_from_u64(cfg.seed ^ 0x1ea5e),
            writes: Vec::new(),
            pair_last: BTreeMap::new(),
            view_last: vec![0; cfg.nodes],
            report: CacheReport::default(),
            cfg,
        };
        for i in members {
            let at = sim.rng.random_range(1..=PERIOD);
            sim.at(at, Event::Tick { node: i, life: 0 });
        }
        sim
    }

    fn at(&mut self, t: u64, e: Event) {
        self.seq += 1;
        self.events.insert((t, self.seq), e);
    }

    fn members(&self) -> &BTreeSet<usize> {
        &self.history.last().expect("never empty").1
    }

    fn lives_of(&self, set: &BTreeSet<usize>) -> Vec<(NodeId, u64)> {
        set.iter()
            .map(|i| (self.ids[*i], u64::from(self.nodes[*i].life)))
            .collect()
    }

    fn index(&self, id: NodeId) -> usize {
        self.ids
            .iter()
            .position(|x| *x == id)
            .expect("a known node")
    }

    /// Phases: changes and writes for 40 s, then writes stop and the
    /// mesh settles for long enough that every view, move, grace and
    /// stray pass has run.
    fn run(&mut self) {
        let active = 40_000;
        let end = active + 2 * GRACE + STRAY_EVERY + 2 * self.cfg.max_view_lag + 5_000;
        let mut change_times: Vec<u64> = (0..self.cfg.changes)
            .map(|_| self.rng.random_range(1_000..active))
            .collect();
        if self.cfg.graceful {
            // And one among the last writes, when a lost write is the
            // key's last and so shows.
            change_times.push(active - self.leave_rng.random_range(50..=500));
        }
        change_times.sort_unstable();
        let mut changes = VecDeque::from(change_times);
        let mut next_write = 5;
        while self.now < end {
            if changes.front().is_some_and(|t| *t <= self.now) {
                changes.pop_front();
                self.change();
            }
            if self.now >= next_write && self.now < active {
                self.write();
                next_write = self.now + self.rng.random_range(1..=40);
            }
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let e = entry.remove();
                self.handle(e);
            }
            self.now += 1;
        }
    }

    /// A join (a node that is down comes up, empty), a crash or a leave.
    fn change(&mut self) {
        let members = self.members().clone();
        // Not a node still up after leaving (gracefully, until it ends).
        let down: Vec<usize> = (0..self.cfg.nodes)
            .filter(|i| !members.contains(i) && !self.nodes[*i].up)
            .collect();
        let join = !down.is_empty() && (members.len() <= 2 || self.rng.random_bool(0.5));
        let mut next = members.clone();
        if join {
            let n = down[self.rng.random_range(0..down.len())];
            next.insert(n);
            let life = self.nodes[n].life + 1;
            let node = &mut self.nodes[n];
            node.up = true;
            node.life = life;
            node.store = CacheStore::new(usize::MAX);
            node.before = None;
            node.to_drop.clear();
            node.dropping.clear();
            node.changed = None;
            // It learns the members as it joins.
            node.view = next.iter().map(|i| self.ids[*i]).collect();
            let lives = self.lives_of(&next);
            self.nodes[n].lives = lives;
            self.view_last[n] = self.now;
            let at = self.now + self.rng.random_range(1..=PERIOD);
            self.at(at, Event::Tick { node: n, life });
        } else {
            // Not one already handing over.
            let list: Vec<usize> = members
                .iter()
                .copied()
                .filter(|i| self.nodes[*i].leaving.is_none())
                .collect();
            if list.is_empty() {
                return;
            }
            let n = list[self.rng.random_range(0..list.len())];
            if self.cfg.graceful && self.leave_rng.random_bool(0.5) {
                self.start_leave(n);
                return;
            }
            next.remove(&n);
            self.nodes[n].up = false;
            self.nodes[n].life += 1;
            self.departed.push((self.now, n));
        }
        self.report.changes += 1;
        self.new_members(next);
    }

    /// The membership becomes `next`; each member sees it after its lag.
    fn new_members(&mut self, next: BTreeSet<usize>) {
        self.history.push((self.now, next.clone()));
        let view = self.lives_of(&next);
        for i in next {
            let lag = self.rng.random_range(1..=self.cfg.max_view_lag);
            // Views change in order on each node.
            let t = (self.now + lag).max(self.view_last[i] + 1);
            self.view_last[i] = t;
            let life = self.nodes[i].life;
            self.at(
                t,
                Event::View {
                    node: i,
                    life,
                    view: view.clone(),
                },
            );
        }
    }

    fn send(&mut self, from: usize, to: NodeId, put: Put) {
        let to = self.index(to);
        let lat = self.rng.random_range(1..=30);
        let last = self.pair_last.get(&(from, to)).copied().unwrap_or(0);
        let t = (self.now + lat).max(last);
        self.pair_last.insert((from, to), t);
        let (from_life, to_life) = (self.nodes[from].life, self.nodes[to].life);
        self.at(
            t,
            Event::Deliver {
                from,
                from_life,
                to,
                to_life,
                put,
            },
        );
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver {
                from,
                from_life,
                to,
                to_life,
                put,
            } => {
                let alive = |n: &SimNode, life| n.up && n.life == life;
                // A graceful stop waits for its queues to empty
                // (`Cache::sent_out`): what it sent arrives.
                let sent = alive(&self.nodes[from], from_life)
                    || self.graceful_lives.contains(&(from, from_life));
                if !sent || !alive(&self.nodes[to], to_life) {
                    return;
                }
                let node = &mut self.nodes[to];
                node.hlc = node.hlc.max(put.entry.ts.wall_ms);
                self.store_here(to, &put.key, &put.entry, false);
                if let Some(id) = put.write {
                    self.ack(id, to);
                }
            }
            Event::View { node, life, view } => {
                if self.nodes[node].up && self.nodes[node].life == life {
                    self.nodes[node].view = view.iter().map(|(id, _)| *id).collect();
                    self.nodes[node].lives = view;
                }
            }
            Event::Tick { node, life } => {
                if !self.nodes[node].up || self.nodes[node].life != life {
                    return;
                }
                self.rebalance(node);
                self.at(self.now + PERIOD, Event::Tick { node, life });
            }
            Event::Depart { node, life } => self.depart(node, life),
            Event::Down { node, life } => self.down(node, life),
        }
    }
}
