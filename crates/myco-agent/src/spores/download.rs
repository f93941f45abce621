//! One attempt at downloading a spore from several sources at once.
//!
//! Chunks of [`CHUNK_LEN`] are handed out lowest offset first to whichever
//! source has room in its window of [`WINDOW`] requests, so a fast source
//! takes more; answers are put back in order ([`InOrder`]) and fed to the
//! [`Receiver`], which writes and verifies them as they land. A chunk a
//! source fails to send (timeout, `Lacking`, a wrong size) goes back to the
//! pool for another. Complete holders that fail are dropped; sources that
//! are still fetching (partial) are only rested until more chunks land.
//! Nothing is asked more than [`AHEAD`] bytes past the first byte still
//! missing, which bounds the out-of-order memory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Duration;

use myco_proto::blob::BlobMessage;
use myco_proto::channel::Channel;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::fetch::Answer;
use super::inorder::InOrder;
use super::receive::Receiver;
use super::source::{Failure, Peer, WINDOW};
use super::store::SporeStore;

/// Bytes asked per request: half the protocol's chunk, so a window of
/// [`WINDOW`] (times two fetches) fits the holder's 8 MiB queue to us.
pub(super) const CHUNK_LEN: u32 = 512 * 1024;
/// How far past the first missing byte requests may reach.
const AHEAD: u64 = 48 * CHUNK_LEN as u64;
/// How long a chunk may take before it is asked of another source.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most sources used at once by one fetch.
const MAX_SOURCES: usize = 8;
/// Chunks landed between two looks for new sources (nodes that began
/// fetching the same spore meanwhile).
const REFRESH_EVERY: u64 = 16;

/// A node to fetch from: its mesh address, and whether it holds the
/// whole spore (a holder) or is fetching it too (it serves its prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// Mesh address.
    pub addr: SocketAddr,
    /// Holds the whole file.
    pub complete: bool,
}

/// Where to look for sources during a fetch (the index may grow).
pub type Sources<'a> = &'a (dyn Fn() -> Vec<Source> + Send + Sync);

/// How one attempt ended.
pub(super) enum Outcome {
    /// Every byte was fed to the receiver.
    Complete,
    /// The receiver refused the bytes already fed.
    Refused,
    /// No source could send the rest.
    Stalled(&'static str),
}

impl SporeStore {
    /// Feeds `rx` the spore from `sources`, starting at its current length.
    pub(super) async fn download(
        &self,
        digest: &str,
        sources: Sources<'_>,
        rx: &mut Receiver,
    ) -> Outcome {
        let (answers, mut inbox) = mpsc::channel(MAX_SOURCES * WINDOW + 1);
        let mut order = InOrder::new(rx.len());
        let mut total: Option<u64> = None;
        let mut next_new = rx.len();
        let mut again: BTreeSet<u64> = BTreeSet::new();
        // offset -> (peer index, deadline)
        let mut out: BTreeMap<u64, (usize, Instant)> = BTreeMap::new();
        let mut peers: Vec<Peer> = Vec::new();
        let mut landed = 0u64;
        let mut looked = None;
        let outcome = loop {
            if total.is_some_and(|t| order.next() >= t) {
                break Outcome::Complete;
            }
            if looked != Some(landed / REFRESH_EVERY) {
                looked = Some(landed / REFRESH_EVERY);
                self.add_sources(&mut peers, sources());
            }
            // Ask: lowest offsets first, one request per source in turn
            // so the load spreads, until no source has room.
            let now = Instant::now();
            let mut asked = true;
            while asked {
                asked = false;
                for (i, p) in peers.iter_mut().enumerate() {
                    if !p.can_ask(landed, now) {
                        continue;
                    }
                    // Until the size is known, one request finds it out.
                    if total.is_none() && !out.is_empty() {
                        break;
                    }
                    let offset = match again.first() {
                        Some(&o) => o,
                        None if total.is_none_or(|t| next_new < t) => next_new,
                        None => break,
                    };
                    if order.ahead(offset) >= AHEAD {
                        break;
                    }
                    self.waiting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((digest.to_string(), offset), answers.clone());
                    let request = BlobMessage::Request {
                        digest: digest.to_string(),
                        offset,
                        len: CHUNK_LEN,
                        reply_to: self.me,
                    };
                    if self
                        .streams
                        .send(p.source.addr, Channel::Blob, request.encode())
                        .is_err()
                    {
                        self.forget(digest, offset);
                        p.asked();
                        p.failed(Failure::Unsendable, landed, now);
                        continue;
                    }
                    again.remove(&offset);
                    if offset == next_new {
                        next_new += u64::from(CHUNK_LEN);
                    }
                    p.asked();
                    out.insert(offset, (i, now + CHUNK_TIMEOUT));
                    asked = true;
                }
            }
            // Wake for the first request due, or the first paused source.
            let due = out.values().map(|(_, d)| *d);
            let paused = peers.iter().filter_map(|p| p.wakes_at(now));
            let Some(deadline) = due.chain(paused).min() else {
                break Outcome::Stalled("no source could be asked");
            };
            let answer = match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(a)) => a,
                Ok(None) => unreachable!("this loop holds a sender"),
                Err(_) => {
                    // Every request past its deadline goes back to the pool.
                    let now = Instant::now();
                    let late: Vec<u64> = out
                        .iter()
                        .filter(|(_, (_, d))| *d <= now)
                        .map(|(o, _)| *o)
                        .collect();
                    for o in late {
                        let (i, _) = out.remove(&o).expect("listed above");
                        self.forget(digest, o);
                        again.insert(o);
                        peers[i].failed(Failure::TimedOut, landed, now);
                    }
                    continue;
                }
            };
            let (offset, result) = match answer {
                Answer::Data {
                    offset,
                    total: t,
                    data,
                } => (offset, Ok((t, data))),
                Answer::Lacking(offset) => (offset, Err(Failure::Lacking)),
                Answer::Busy(offset) => {
                    // Paused, not dropped: it serves others and will serve us.
                    if let Some((i, _)) = out.remove(&offset) {
                        again.insert(offset);
                        peers[i].busy(Instant::now());
                    }
                    continue;
                }
                Answer::Missing => {
                    // From an older node without the file, and it does not
                    // say which request: every request out is asked again.
                    let from: Vec<u64> = out.keys().copied().collect();
                    for o in from {
                        let (i, _) = out.remove(&o).expect("listed above");
                        self.forget(digest, o);
                        again.insert(o);
                        peers[i].failed(Failure::Lacking, landed, Instant::now());
                    }
                    continue;
                }
            };
            let Some((i, _)) = out.remove(&offset) else {
                continue; // a late answer to a request already given up
            };
            let (t, data) = match result {
                Ok(v) => v,
                Err(why) => {
                    again.insert(offset);
                    peers[i].failed(why, landed, Instant::now());
                    continue;
                }
            };
            let want = t.saturating_sub(offset).min(u64::from(CHUNK_LEN));
            if t > self.limits.max_spore_bytes
                || total.is_some_and(|known| known != t)
                || data.len() as u64 != want
            {
                again.insert(offset);
                peers[i].failed(Failure::Bad, landed, Instant::now());
                continue;
            }
            peers[i].sent_chunk();
            if total.is_none() {
                rx.set_total(t);
            }
            total = Some(t);
            if data.is_empty() {
                continue; // asked at or past the end: the size was the news
            }
            let Ok(ready) = order.push(offset, data) else {
                continue; // a duplicate of a chunk already in
            };
            landed += 1;
            // Nothing is asked past AHEAD, so this is what a fetch holds.
            debug_assert!(order.held() as u64 <= AHEAD + u64::from(CHUNK_LEN));
            let mut taken = true;
            for run in ready {
                taken = taken && rx.feed(run).await;
            }
            if !taken {
                // The verifier stopped: it has refused the spore.
                break Outcome::Refused;
            }
        };
        for o in out.keys() {
            self.forget(digest, *o);
        }
        outcome
    }

    fn add_sources(&self, peers: &mut Vec<Peer>, found: Vec<Source>) {
        for s in found {
            if s.addr == self.me || peers.len() >= MAX_SOURCES {
                continue;
            }
            match peers.iter_mut().find(|p| p.source.addr == s.addr) {
                // A partial source that completed is a holder now.
                Some(p) => p.source.complete |= s.complete,
                None => peers.push(Peer::new(s)),
            }
        }
    }

    fn forget(&self, digest: &str, offset: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(digest.to_string(), offset));
    }
}
