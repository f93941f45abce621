//! Live CPU and memory use of every node, for `/v1/nodes` and the
//! dashboard. Each node samples its own ([`sample`]) every
//! [`SAMPLE_EVERY`]; a node asked for the mesh's use asks its peers over
//! app messaging (topic [`ASK_TOPIC`], at most once per [`FRESH`]) and
//! each answers to it alone on [`TOPIC`]. Nothing is written to disk and
//! nothing flows while nobody looks: the cost is one small message per
//! peer per read, at most every [`FRESH`].

pub mod sample;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::api::NodeUsage;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::msg::{Messaging, Subscription};

/// Where a node asks its peers for their use.
pub const ASK_TOPIC: &str = "myco.usage.ask";
/// Where peers answer (each to the asking node only).
pub const TOPIC: &str = "myco.usage";
/// Whether `topic` is one of these, which messaging does not announce
/// (every node has them; see [`crate::msg`]'s announcements).
pub fn is_internal(topic: &str) -> bool {
    topic == ASK_TOPIC || topic == TOPIC
}

/// How often a node samples itself.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Reads within this long of the last ask use its answers.
pub const FRESH: Duration = Duration::from_secs(2);
/// A peer's answer older than this is not shown.
pub const STALE: Duration = Duration::from_secs(15);
/// Longest a read waits for peers' answers to a new ask.
pub const WAIT: Duration = Duration::from_millis(400);
/// Peers' answers held at most (one per node).
pub const MAX_NODES: usize = 4096;

/// Every node's latest use, as this node knows it.
pub struct Usage {
    me: NodeId,
    msg: Arc<Messaging>,
    own: Mutex<Option<NodeUsage>>,
    peers: Mutex<HashMap<NodeId, (NodeUsage, Instant)>>,
    asked: Mutex<Option<Instant>>,
    arrived: Notify,
    /// Answers that did not parse, or came past [`MAX_NODES`].
    pub dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Usage {
    /// Starts sampling, answering peers' asks and collecting answers.
    pub fn start(msg: Arc<Messaging>) -> Arc<Usage> {
        let usage = Arc::new(Usage {
            me: msg.node_id(),
            msg: msg.clone(),
            own: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            asked: Mutex::new(None),
            arrived: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(sampler(Arc::downgrade(&usage)));
        match (msg.subscribe(ASK_TOPIC), msg.subscribe(TOPIC)) {
            (Ok(asks), Ok(answers)) => {
                tokio::spawn(answer(Arc::downgrade(&usage), asks));
                tokio::spawn(collect(Arc::downgrade(&usage), answers));
            }
            (a, b) => {
                let e = a.err().or(b.err());
                tracing::warn!(error = ?e, "node usage: cannot subscribe; peers' use will not show");
            }
        }
        usage
    }

    /// This node's latest sample.
    pub fn own(&self) -> Option<NodeUsage> {
        lock(&self.own).clone()
    }

    /// The use of this node and of every peer that answered lately, with
    /// `age_ms` set. When the last ask is older than [`FRESH`] it asks
    /// again and waits up to [`WAIT`] for the nodes in `up` to answer.
    pub async fn of_all(&self, up: &[NodeId]) -> BTreeMap<NodeId, NodeUsage> {
        let ask_at = {
            let mut asked = lock(&self.asked);
            let now = Instant::now();
            match *asked {
                Some(t) if now.duration_since(t) < FRESH => None,
                _ => {
                    *asked = Some(now);
                    Some(now)
                }
            }
        };
        if let Some(at) = ask_at {
            let _ = self.msg.publish(ASK_TOPIC, Vec::new(), None);
            let deadline = at + WAIT;
            loop {
                let notified = self.arrived.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let all = {
                    let peers = lock(&self.peers);
                    up.iter()
                        .filter(|n| **n != self.me)
                        .all(|n| peers.get(n).is_some_and(|(_, t)| *t >= at))
                };
                if all {
                    break;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let now = Instant::now();
        let mut out: BTreeMap<NodeId, NodeUsage> = lock(&self.peers)
            .iter()
            .filter(|(_, (_, t))| now.duration_since(*t) < STALE)
            .map(|(id, (u, t))| {
                let mut u = u.clone();
                u.age_ms = now.duration_since(*t).as_millis() as u64;
                (*id, u)
            })
            .collect();
        if let Some(own) = self.own() {
            out.insert(self.me, own);
        }
        out
    }

    fn store(&self, from: NodeId, body: &[u8]) {
        let Ok(u) = serde_json::from_slice::<NodeUsage>(body) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, "node usage: an answer that does not parse");
            return;
        };
        let mut peers = lock(&self.peers);
        let now = Instant::now();
        if peers.len() >= MAX_NODES && !peers.contains_key(&from) {
            peers.retain(|_, (_, t)| now.duration_since(*t) < STALE);
            if peers.len() >= MAX_NODES {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        peers.insert(from, (u, now));
        drop(peers);
        self.arrived.notify_waiters();
    }
}

async fn sampler(usage: Weak<Usage>) {
    let mut s = sample::Sampler::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let Some(u) = usage.upgrade() else { return };
        // procfs reads are quick, but they are file reads all the same.
        let (next, back) = match tokio::task::spawn_blocking(move || (s.sample(), s)).await {
            Ok(x) => x,
            Err(_) => return,
        };
        s = back;
        *lock(&u.own) = Some(next);
    }
}

async fn answer(usage: Weak<Usage>, mut asks: Subscription) {
    while let Some(d) = asks.recv().await {
        let Some(u) = usage.upgrade() else { return };
        if d.from == u.me {
            continue;
        }
        if let Some(own) = u.own() {
            let body = serde_json::to_vec(&own).expect("usage always encodes");
            let _ = u.msg.publish(TOPIC, body, Some(d.from));
        }
    }
}

async fn collect(usage: Weak<Usage>, mut answers: Subscription) {
    while let Some(d) = answers.recv().await {
        let Some(u) = usage.upgrade() else { return };
        if d.from != u.me {
            u.store(d.from, &d.body);
        }
    }
}
