//! Choosing an instance: power of two choices over requests in flight,
//! and passive ejection of instances that keep failing.
//!
//! Two instances are drawn at random and the one with fewer requests in
//! flight wins: nearly as good as "least loaded" without a global scan,
//! and never herding every edge onto the same idle instance the way a
//! strict minimum does when views lag.
//!
//! An instance whose requests fail [`EJECT_AFTER`] times in a row
//! (connection refused or failed, timeout, 5xx: Envoy's
//! `consecutive_5xx`) is left out for a cool-down that doubles on each
//! ejection in a row ([`BASE_COOLDOWN_MS`] up to [`MAX_COOLDOWN_MS`]); one
//! success resets both. When every ready instance is ejected they are all
//! used anyway (the panic threshold): a mesh-wide fault must not turn into
//! a total outage of the edge.
//!
//! A job may ask for round robin instead (`[edge] balance`, see
//! [`round_robin`]), or for a local instance when it is as good
//! ([`prefer_local`]).
//!
//! State lives in atomics on [`Upstream`], shared by every request and
//! kept across route-table rebuilds; nothing here takes a lock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use myco_proto::id::NodeId;

/// Failures in a row that eject an instance.
pub const EJECT_AFTER: u32 = 5;
/// The first cool-down.
pub const BASE_COOLDOWN_MS: u64 = 5_000;
/// The longest cool-down.
pub const MAX_COOLDOWN_MS: u64 = 60_000;

/// How a request reaches an instance (see `edge::relay`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// On this node: over loopback.
    Local,
    /// On another node: through that node's relay, over the mesh's mutual
    /// TLS, at this stream address.
    Relay(axum::http::uri::Authority),
    /// Straight to its address in plaintext: only when the operator allows
    /// it (trusted LANs), or with no mesh around (unit tests).
    Direct,
}

/// One instance as the proxy sees it: where it is, and its live counters.
#[derive(Debug)]
pub struct Upstream {
    /// The instance id.
    pub instance: String,
    /// The node that runs it.
    pub node: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the edge's plain client connects, as a URI authority made
    /// once rather than per request: `addr`, or loopback for a local one.
    pub authority: Option<axum::http::uri::Authority>,
    /// How requests reach it.
    pub hop: Hop,
    in_flight: AtomicU32,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Edge-clock milliseconds until which it is ejected (0: not).
    ejected_until: AtomicU64,
}

impl Upstream {
    /// A fresh instance: nothing in flight, never failed.
    pub fn new(instance: String, node: NodeId, addr: SocketAddr) -> Self {
        Upstream {
            instance,
            node,
            authority: axum::http::uri::Authority::try_from(addr.to_string()).ok(),
            hop: Hop::Direct,
            addr,
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// The same instance reached by `hop`. A local instance is reached on
    /// loopback: it may listen on `127.0.0.1` only.
    pub fn reached_by(mut self, hop: Hop) -> Self {
        if hop == Hop::Local {
            let port = self.addr.port();
            self.authority = axum::http::uri::Authority::try_from(format!("127.0.0.1:{port}")).ok();
        }
        self.hop = hop;
        self
    }

    /// Requests in flight to it now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it is ejected at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Counts a request to it until the guard drops (when its response
    /// body ends or is dropped).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// A request succeeded: the failure streak and cool-down reset.
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed at `now_ms`; returns whether this ejected it.
    pub fn failed(&self, now_ms: u64) -> bool {
        let streak = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < EJECT_AFTER || self.is_ejected(now_ms) {
            return false;
        }
        let n = self.ejections.fetch_add(1, Ordering::Relaxed);
        let cooldown = (BASE_COOLDOWN_MS << n.min(16)).min(MAX_COOLDOWN_MS);
        self.ejected_until
            .store(now_ms + cooldown, Ordering::Relaxed);
        // The next streak starts from zero after the cool-down.
        self.failures.store(0, Ordering::Relaxed);
        true
    }
}

/// A request in flight to an [`Upstream`]; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an instance among `ready`, never `exclude` (the one that just
/// failed, on a retry). Ejected instances are skipped unless all the
/// others are ejected too. `random` gives uniform 64-bit numbers.
pub fn pick<'a>(
    ready: &'a [Arc<Upstream>],
    exclude: Option<&Upstream>,
    now_ms: u64,
    random: &mut impl FnMut() -> u64,
) -> Option<&'a Arc<Upstream>> {
    let allowed = |u: &Arc<Upstream>| !exclude.is_some_and(|x| std::ptr::eq(x, &**u));
    let healthy = |u: &&Arc<Upstream>| allowed(u) && !u.is_ejected(now_ms);
    let n = ready.iter().filter(healthy).count();
    if n > 0 {
        return two_choices(ready.iter().filter(healthy), n, random);
    }
    let any = |u: &&Arc<Upstream>| allowed(u);
    let n = ready.iter().filter(any).count();
    two_choices(ready.iter().filter(any), n, random)
}

/// Round robin (a job's `balance = "round_robin"`): the next instance
/// after the last one `turn` gave, skipping `exclude` and ejected ones
/// (all ejected: any but `exclude`, as [`pick`] does). `turn` is the job's
/// counter, shared by every request on this edge.
pub fn round_robin<'a>(
    ready: &'a [Arc<Upstream>],
    exclude: Option<&Upstream>,
    now_ms: u64,
    turn: &AtomicUsize,
) -> Option<&'a Arc<Upstream>> {
    let n = ready.len();
    if n == 0 {
        return None;
    }
    let start = turn.fetch_add(1, Ordering::Relaxed);
    let allowed = |u: &Arc<Upstream>| !exclude.is_some_and(|x| std::ptr::eq(x, &**u));
    let in_turn = || (0..n).map(|k| &ready[(start + k) % n]);
    in_turn()
        .find(|u| allowed(u) && !u.is_ejected(now_ms))
        .or_else(|| in_turn().find(|u| allowed(u)))
}

/// With prefer-local on: `chosen`, or a local instance instead when one is
/// as good (not ejected, not `exclude`, no more requests in flight). A
/// local instance saves the hop between nodes; "as good" keeps a busy
/// local instance from taking load that idle remote ones would serve
/// faster.
pub fn prefer_local<'a>(
    ready: &'a [Arc<Upstream>],
    chosen: &'a Arc<Upstream>,
    exclude: Option<&Upstream>,
    now_ms: u64,
) -> &'a Arc<Upstream> {
    if chosen.hop == Hop::Local {
        return chosen;
    }
    let local = (ready.iter())
        .filter(|u| u.hop == Hop::Local && !u.is_ejected(now_ms))
        .filter(|u| !exclude.is_some_and(|x| std::ptr::eq(x, &***u)))
        .min_by_key(|u| u.in_flight());
    match local {
        Some(l) if l.in_flight() <= chosen.in_flight() => l,
        _ => chosen,
    }
}

/// The less loaded of two distinct random members of `candidates` (`n` long).
fn two_choices<'a>(
    candidates: impl Iterator<Item = &'a Arc<Upstream>> + Clone,
    n: usize,
    random: &mut impl FnMut() -> u64,
) -> Option<&'a Arc<Upstream>> {
    match n {
        0 => None,
        1 => candidates.clone().next(),
        _ => {
            let i = (random() % n as u64) as usize;
            // A second index, distinct from the first.
            let j = (i + 1 + (random() % (n as u64 - 1)) as usize) % n;
            let a = candidates.clone().nth(i)?;
            let b = candidates.clone().nth(j)?;
            Some(if b.in_flight() < a.in_flight() { b } else { a })
        }
    }
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
