//! Cache buckets across the mesh: the shell around `myco_core::cache`.
//!
//! Bucket configs are replicated state (table `CACHE_BUCKETS`); entries
//! live only in memory, in this node's [`CacheStore`] for the keys it
//! owns. Any node answers any key: [`Cache`] ranks the live members for
//! the key (`myco_core::cache::owners`) and reads or writes on the owners,
//! locally or over the stream transport ([`CacheMessage`] on the cache
//! channel).
//!
//! - [`ops`]: the operations (`get`, `set`, `delete`, `expire`, `ttl`,
//!   `create_bucket`), shared by HTTP, the Redis protocol and embedders.
//! - [`counter`]: `incr`, made on the key's primary and copied on.
//! - [`remote`]: serving other nodes' requests and matching answers to
//!   this node's.
//! - [`rebalance`]: moving entries to their new owners after a membership
//!   change, sweeping expired ones.
//! - [`leave`]: handing every entry over before a graceful stop.
//!
//! Semantics (also in ARCHITECTURE.md): a write is acknowledged once two
//! owners hold it (the primary and a replica when both are up; one when
//! the bucket keeps one copy or one node is live); a read asks the ranked
//! members in order and takes the first that holds the key, so a down
//! primary falls back to a replica and a key still on its old owner during
//! a move is found; owners that missed it are repaired.

mod counter;
mod leave;
mod ops;
mod rebalance;
mod remote;
mod repair;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use myco_core::MemberState;
use myco_core::cache::{CacheStats, CacheStore};
use myco_core::state::hlc::Hlc;
use myco_proto::NodeId;
use myco_proto::cache::{BucketConfig, CacheEntry, CacheInputError, CacheMessage};
use myco_proto::channel::Channel;
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::mesh::{MeshHandle, ReadView, WriteError};
use crate::net::streams::Streams;

pub use leave::HandedOver;
pub use ops::Ttl;

/// Bytes of entries one node holds for all buckets by default; past it
/// the least recently used are evicted (`MYCO_CACHE_BYTES` overrides).
pub const DEFAULT_BUDGET: usize = 256 << 20;
/// How long a node waits for an owner's answer before asking the next.
pub const OWNER_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a request naming a bucket this node does not know waits for
/// its config to arrive before the answer is "no such bucket".
pub const UNKNOWN_BUCKET_WAIT: Duration = Duration::from_secs(1);
/// How often a node that created a bucket asks the members that do not
/// hold its config yet again (see `Cache::create_bucket`).
pub const KNOWN_ROUND: Duration = Duration::from_millis(20);
/// How long a write waits for its acknowledgements (owners that have not
/// answered after [`OWNER_TIMEOUT`] get stand-ins, see `Cache::write_held`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a delete's tombstone lives at least (a late copy of the old
/// value cannot bring the key back meanwhile).
pub const TOMBSTONE_MS: u64 = 60_000;
/// One read in this many that found a key also asks the owners ranked
/// below the one that answered, after answering, and sends the newest
/// version to any that holds an older one or none (read-repair of stale
/// copies; every read would double the messages of a read), and at most
/// one a millisecond.
pub const READ_REPAIR_EVERY: u64 = 8;
/// Bucket names whose parsed config (or absence) [`Cache`] remembers for
/// the current view of the state.
const KNOWN_CONFIGS: usize = 1024;
/// Cache messages from the mesh loop queued for this service; more are
/// dropped and counted (the asker times out and asks the next owner).
pub const INBOX: usize = 4096;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No bucket of that name.
    #[error("no cache bucket {0:?}: create it with `PUT /v1/cache/{0}` or `myco cache create {0}`")]
    NoBucket(String),
    /// A name, key, value or config was refused.
    #[error(transparent)]
    Input(#[from] CacheInputError),
    /// Too few owners answered in time.
    #[error("{0}; try again (owners may be restarting or unreachable)")]
    Unavailable(String),
    /// Storing the bucket config failed.
    #[error("storing the bucket config: {0}")]
    Config(#[from] WriteError),
    /// An increment was refused (the key holds no integer, or overflow).
    #[error(transparent)]
    Counter(#[from] myco_proto::cache::CounterError),
}

/// Counters of the cache service besides the store's.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Messages dropped: undecodable, unexpected, or the inbox was full.
    pub dropped: AtomicU64,
    /// Reads answered by an owner after a higher-ranked one missed.
    pub fallback_reads: AtomicU64,
    /// Writes acknowledged with a stand-in for an owner that could not be
    /// reached or was slow (see `Cache::write_held`).
    pub stand_in_writes: AtomicU64,
    /// Copies sent to owners that missed a key another owner held.
    pub read_repairs: AtomicU64,
    /// Entries sent to new owners after membership changes.
    pub moved: AtomicU64,
    /// Reads that found a live value.
    pub hits: AtomicU64,
    /// Reads that found none (absent, expired or deleted).
    pub misses: AtomicU64,
    /// Requests (reads and writes) sent to other nodes.
    pub forwards: AtomicU64,
    /// Increments through this node that were applied.
    pub increments: AtomicU64,
    /// Increments refused because the key held no integer or the sum
    /// would overflow.
    pub increments_refused: AtomicU64,
}

/// The cache service of one node; clones of the `Arc` share it.
pub struct Cache {
    me: NodeId,
    addr: SocketAddr,
    mesh: MeshHandle,
    streams: Streams,
    store: Mutex<CacheStore>,
    hlc: Mutex<Hlc>,
    next_request: AtomicU64,
    /// Reads that found a key, to pick the ones that check the others.
    reads: AtomicU64,
    /// The wall-clock ms of the last read-repair check started.
    last_repair_check: AtomicU64,
    /// This node's requests waiting for answers, by request id (this
    /// node's own counter, never a client's bytes: FxHash).
    waiting: Mutex<FxHashMap<u64, remote::Waiter>>,
    /// Bucket configs parsed from the view they were read in.
    configs: Mutex<KnownConfigs>,
    /// The live members as last listed, and the snapshot they came from:
    /// every GET and SET asks, and the list changes only with membership.
    live: Mutex<(std::sync::Weak<crate::mesh::Snapshot>, Arc<Live>)>,
    /// Set when a graceful stop starts handing the entries over: writes
    /// stored here from then on are passed on too ([`leave::Leaving`]).
    leaving: std::sync::OnceLock<leave::Leaving>,
    /// Entries waiting out their grace before the rebalancer drops them.
    drops: rebalance::Drops,
    /// The last change the rebalancer walked, for versions stored after.
    changed: rebalance::Changed,
    counters: CacheCounters,
}

/// The live members with their stream addresses, and their ids alone
/// (what ranking takes); derefs to the first.
#[derive(Debug, Default)]
pub(crate) struct Live {
    members: Vec<(NodeId, SocketAddr)>,
    ids: Vec<NodeId>,
    /// Those membership suspects (no answer to its probes lately): still
    /// owners, but asked after the others and not waited on.
    suspects: Vec<NodeId>,
}

impl std::ops::Deref for Live {
    type Target = [(NodeId, SocketAddr)];

    fn deref(&self) -> &Self::Target {
        &self.members
    }
}

impl Live {
    /// The members' ids, in the same order.
    pub(crate) fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    /// The stream address of `node`, if it is live.
    pub(crate) fn addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.members
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, a)| *a)
    }

    /// Whether membership suspects `node` (see [`Live::suspects`]).
    pub(crate) fn suspected(&self, node: NodeId) -> bool {
        self.suspects.contains(&node)
    }
}

/// Parsed bucket configs (`None`: no such bucket) and the view of the
/// state they were read in.
type KnownConfigs = (
    std::sync::Weak<ReadView>,
    HashMap<String, Option<BucketConfig>>,
);

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("me", &self.me).finish()
    }
}

/// The wall clock in ms (entries expire by wall time, which all nodes
/// share within their clock skew).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The budget from `MYCO_CACHE_BYTES`, else [`DEFAULT_BUDGET`].
pub fn budget_from_env() -> usize {
    std::env::var("MYCO_CACHE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BUDGET)
}

impl Cache {
    /// Starts the service: the consumer of `inbox` (cache-channel messages
    /// the mesh loop hands over) and the rebalancer, on the current runtime.
    pub fn start(
        mesh: MeshHandle,
        streams: Streams,
        budget: usize,
        inbox: mpsc::Receiver<Vec<u8>>,
    ) -> Arc<Cache> {
        let me = mesh.me();
        let seed = u64::from_le_bytes(crate::config::datadir::random_bytes::<8>());
        let cache = Arc::new(Cache {
            me: me.id,
            addr: me.addr,
            mesh,
            streams,
            store: Mutex::new(CacheStore::new(budget)),
            hlc: Mutex::new(Hlc::new(me.id, 60_000)),
            // Random start: ids of a restarted agent do not meet the old ones.
            next_request: AtomicU64::new(seed >> 1),
            reads: AtomicU64::new(0),
            last_repair_check: AtomicU64::new(0),
            waiting: Mutex::new(FxHashMap::default()),
            configs: Mutex::new((std::sync::Weak::new(), HashMap::new())),
            live: Mutex::new((std::sync::Weak::new(), Arc::default())),
            leaving: std::sync::OnceLock::new(),
            drops: rebalance::Drops::default(),
            changed: rebalance::Changed::default(),
            counters: CacheCounters::default(),
        });
        tokio::spawn(remote::consume(cache.clone(), inbox));
        // Requests and answers from other nodes are handled on the stream
        // reader's task (`on_message` never waits); the inbox still takes
        // what the mesh loop hands over.
        cache
            .streams
            .handle_for(myco_proto::channel::Channel::Cache, &cache, Cache::on_bytes);
        tokio::spawn(rebalance::run(Arc::downgrade(&cache)));
        cache
    }

    /// The store's counters.
    pub fn stats(&self) -> CacheStats {
        self.store().stats()
    }

    /// The service's counters.
    pub fn counters(&self) -> &CacheCounters {
        &self.counters
    }

    fn store(&self) -> std::sync::MutexGuard<'_, CacheStore> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self) -> myco_proto::Timestamp {
        self.hlc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tick(wall_ms())
    }

    /// The live members (alive or suspect: a suspect may refute, and
    /// moving its keys away and back would cost more than a slow read),
    /// with their stream addresses; listed once per membership snapshot.
    /// A suspect is asked last and not waited on (a machine that lost
    /// power answers nothing, and its connections time out rather than
    /// being refused): reads ask the other owners first, writes get a
    /// stand-in at once.
    fn live(&self) -> Arc<Live> {
        let snap = self.mesh.snapshot();
        let mut known = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        // The weak reference keeps the old snapshot's allocation, so a new
        // one can never sit at the same address.
        if known.0.as_ptr() == Arc::as_ptr(&snap) {
            return known.1.clone();
        }
        let mut live: Vec<(NodeId, SocketAddr)> = snap
            .members
            .iter()
            .filter(|m| m.is_self || matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| (m.peer.id, m.peer.addr))
            .collect();
        if !live.iter().any(|(id, _)| *id == self.me) {
            live.push((self.me, self.addr));
        }
        let ids = live.iter().map(|(id, _)| *id).collect();
        let suspects = snap
            .members
            .iter()
            .filter(|m| !m.is_self && m.state == MemberState::Suspect)
            .map(|m| m.peer.id)
            .collect();
        let live = Arc::new(Live {
            members: live,
            ids,
            suspects,
        });
        *known = (Arc::downgrade(&snap), live.clone());
        live
    }

    /// The live members with their boot numbers (a member back in a new
    /// life holds nothing, so the rebalancer treats it as joining).
    fn live_lives(&self) -> Vec<(NodeId, u64)> {
        let snap = self.mesh.snapshot();
        let mut lives: Vec<(NodeId, u64)> = snap
            .members
            .iter()
            .filter(|m| m.is_self || matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| (m.peer.id, m.peer.boot))
            .collect();
        if !lives.iter().any(|(id, _)| *id == self.me) {
            lives.push((self.me, 0));
        }
        lives.sort_unstable();
        lives
    }

    fn request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    fn drop_one(&self, why: &str) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(why, "cache message dropped");
    }

    /// Queues a message for `to`; false when the queue refused it, or when
    /// `to` refused the last connection (a killed node, before membership
    /// sees it down): the asker then goes to the next node at once rather
    /// than waiting out [`OWNER_TIMEOUT`] for an answer that cannot come.
    fn send(&self, to: SocketAddr, message: &CacheMessage) -> bool {
        self.streams
            .send_if_reachable(to, Channel::Cache, message.encode(), None)
            .is_ok()
    }

    /// Stores a version on this node: every path that puts one here (a
    /// write from any asker, a copy, a repair) comes through this or,
    /// holding the store's lock, through [`Cache::stored`]. `own`: this
    /// node's own write or repair, which it sends to the owners of its
    /// current view itself, so it needs no pass-on after a change.
    fn store_here(
        &self,
        bucket: &str,
        max_entries: u64,
        key: &str,
        entry: CacheEntry,
        now: u64,
        own: bool,
    ) {
        let after_change = !own && self.changed.recent(now);
        let kept = (self.leaving() || after_change).then(|| entry.clone());
        let merge = self.store().put(bucket, max_entries, key, entry, now);
        // A version older than the one held changes nothing to pass on
        // (and two nodes whose views differ cannot pass it back and forth).
        let kept = kept.filter(|_| merge == myco_core::cache::Merge::Stored);
        self.stored(bucket, key, kept.as_ref(), after_change);
    }

    /// What follows a version stored here: a drop the rebalancer decided
    /// for the key waits for its next walk (`rebalance::Drops`); once a
    /// graceful stop has begun the version (`entry`, new here and kept
    /// for it) is passed on to its next owners (`leave`), and with
    /// `after_change` (the caller found a change walked less than a grace
    /// ago) to the owners that change added (`rebalance::Changed`).
    fn stored(&self, bucket: &str, key: &str, entry: Option<&CacheEntry>, after_change: bool) {
        self.drops.cancel(bucket, key);
        let Some(entry) = entry else {
            return;
        };
        self.pass_on_if_leaving(bucket, key, entry);
        if after_change {
            self.pass_on_after_change(bucket, key, entry);
        }
    }

    /// Sends `node` (found in `live`) a copy of a version it is not asked to
    /// acknowledge (a move, a repair, a suspect owner's copy); false when
    /// `node` is not live or the message could not be queued.
    fn send_copy(
        &self,
        live: &Live,
        node: NodeId,
        bucket: &str,
        key: &str,
        entry: &CacheEntry,
    ) -> bool {
        let Some(addr) = live.addr(node) else {
            return false;
        };
        let message = CacheMessage::Put {
            request: 0,
            bucket: bucket.to_string(),
            key: key.to_string(),
            entry: entry.clone(),
            ack: false,
            reply_to: self.addr,
        };
        self.send(addr, &message)
    }

    /// [`Cache::send`] for a request this node waits on: if the message is
    /// dropped without being sent (`to` refused the connection), the wait
    /// ends at once with an `Ack` that stored nothing, as if `to` had
    /// refused, so the asker goes to the next node now.
    fn send_request(self: &Arc<Self>, to: SocketAddr, message: Vec<u8>, request: u64) -> bool {
        let cache = Arc::downgrade(self);
        let receipt: crate::net::streams::Receipt = Box::new(move || {
            if let Some(cache) = cache.upgrade() {
                cache.unsent(request);
            }
        });
        self.streams
            .send_if_reachable(to, Channel::Cache, message, Some(receipt))
            .is_ok()
    }

    /// Ends the wait of `request`, whose message was never sent (a wait
    /// that already ended is no loss).
    fn unsent(&self, request: u64) {
        let refused = CacheMessage::Ack {
            request,
            stored: false,
        };
        let _ = self.answer(request, refused);
    }
}
