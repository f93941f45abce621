//! A graceful stop hands the cache's entries over before the node leaves:
//! every entry this node holds goes to the owners it has once this node is
//! gone (`myco_core::cache::owners` without this node: all of them, not
//! only the new ones, since this node may hold a version they lack, from
//! a writer whose view was older), and the stop waits for their
//! acknowledgements, within a bound. Without it a bucket
//! that keeps one copy lost every key this node owned on each graceful
//! restart, and one that keeps two was a single copy until the other
//! owners' rebalancers caught up.
//!
//! Peers marked draining (they are stopping too, `myco_proto::node_mark`)
//! are not sent anything: a whole mesh stopped at once has no one to hand
//! to. Writes keep reaching this node until its peers see it leave: from
//! the walk's start, each one it stores is passed on as well ([`Leaving`]),
//! unacknowledged, so one the walk already passed, or one that arrives
//! after the walk, does not go with the node.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use myco_core::cache::rank;
use myco_core::jobs::controller::draining_members;
use myco_proto::cache::CacheEntry;
use myco_proto::channel::Channel;
use myco_proto::{NodeId, Table};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::remote::{Registered, Waiter};
use super::{Cache, CacheMessage, Live, wall_ms};
use crate::net::streams::{Receipt, SendError};

/// Entries read from the store per step of the walk.
const PAGE: usize = 256;
/// Sent and not yet acknowledged, at most: the walk waits for acks past it.
/// Well under a peer's stream queue (1,024 messages): at 2,048 the owners'
/// queues of acks back to this node overflowed (100,000 keys: 757 acks
/// refused, and the walk waited out its bound for them).
const IN_FLIGHT: u64 = 256;

/// The members once this node is gone, fixed when the hand-over starts.
pub(super) struct Leaving {
    after: Vec<NodeId>,
    live: Arc<Live>,
}

/// What a hand-off did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandedOver {
    /// Copies sent to new owners.
    pub sent: u64,
    /// Of those, acknowledged as stored.
    pub acked: u64,
}

impl Cache {
    /// Sends every entry this node holds to its owners without this node,
    /// and waits up to `bound` for them to acknowledge. Returns at once
    /// when no live peer that is not draining remains. Members that
    /// membership suspects count as gone while another peer remains, at
    /// the start and as the walk goes ([`Walk`]).
    pub async fn hand_over(self: &Arc<Self>, bound: Duration) -> HandedOver {
        let deadline = Instant::now() + bound;
        let live = self.live();
        let mut members: Vec<NodeId> = live.ids().to_vec();
        members.sort_unstable();
        let draining = self.draining_peers();
        let mut after: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|n| *n != self.me && !draining.contains(n))
            .collect();
        // Not to members membership suspects, while another remains: one
        // that stopped answering (a machine that died moments ago) would
        // hold its copies unacknowledged for the whole bound, and take
        // them with it. A suspect that was only slow gets its keys back
        // from the stray pass (`rebalance`).
        let gone = gone_while_others_remain(&live, &after);
        after.retain(|n| !gone.contains(n));
        let done = HandedOver::default();
        if after.is_empty() {
            return done;
        }
        // Before the walk: a write stored from here on is either walked
        // over or passed on as it is stored (or both; copies merge).
        let _ = self.leaving.set(Leaving {
            after: after.clone(),
            live: live.clone(),
        });
        // Room for every answer that can be outstanding: the bound, and one
        // entry's copies past it.
        let (tx, acks) = mpsc::channel(IN_FLIGHT as usize + 256);
        // A request id per member, so an answer says whose it is.
        let out: Vec<Out> = after
            .iter()
            .map(|&node| Out {
                node,
                request: self.request_id(),
                keys: Vec::new(),
                answered: 0,
            })
            .collect();
        let _registered: Vec<Registered> = out
            .iter()
            .map(|o| Registered::new(self, o.request, Waiter::Many(tx.clone())))
            .collect();
        let mut walk = Walk {
            cache: self,
            live,
            after,
            out,
            deadline,
            acks,
            unsent: Arc::default(),
            answers: tx,
            retry: Vec::new(),
            done,
        };
        let mut cursor: Option<(String, String)> = None;
        'pages: while Instant::now() < deadline {
            let page = self
                .store()
                .entries_after(cursor.as_ref().map(|(b, k)| (b.as_str(), k.as_str())), PAGE);
            let Some(last) = page.last() else {
                break;
            };
            cursor = Some((last.0.clone(), last.1.clone()));
            for (bucket, key, entry) in page {
                if entry.is_expired(wall_ms()) {
                    continue;
                }
                walk.place(bucket, key, entry).await;
                while walk.in_flight() >= IN_FLIGHT {
                    if !walk.wait_one().await {
                        break 'pages;
                    }
                }
                walk.place_again().await;
            }
        }
        while walk.in_flight() > 0 && walk.wait_one().await {
            walk.place_again().await;
        }
        let done = walk.done;
        self.handed_over(done)
    }

    /// Once a hand-over has started, sends a version this node just stored
    /// to the owners the key has without this node (unacknowledged: the
    /// write's own acknowledgement does not wait for it).
    pub(super) fn pass_on_if_leaving(&self, bucket: &str, key: &str, entry: &CacheEntry) {
        let Some(leaving) = self.leaving.get() else {
            return;
        };
        let replicas = self.bucket(bucket).unwrap_or_default().replicas.max(1);
        // A member that refuses (its connection was refused moments ago:
        // killed, or gone) is skipped for the next in the key's ranking.
        let mut placed = 0;
        for node in rank(bucket, key, &leaving.after) {
            if placed == replicas {
                break;
            }
            if self.send_copy(&leaving.live, node, bucket, key, entry) {
                placed += 1;
                self.counters
                    .moved
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Whether a hand-over has started (a stored write must be kept for
    /// [`Cache::pass_on_if_leaving`]).
    pub(super) fn leaving(&self) -> bool {
        self.leaving.get().is_some()
    }

    /// Waits, up to `bound`, until the streams hold nothing queued for
    /// any peer: the last copies [`Cache::pass_on_if_leaving`] sent are
    /// written before the process ends. Nothing to wait for when no
    /// hand-over started.
    pub async fn sent_out(&self, bound: Duration) {
        if !self.leaving() {
            return;
        }
        let deadline = Instant::now() + bound;
        while self.streams.queued_bytes() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn handed_over(&self, done: HandedOver) -> HandedOver {
        self.counters
            .moved
            .fetch_add(done.sent, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            sent = done.sent,
            acknowledged = done.acked,
            "cache entries handed over to their owners without this node"
        );
        done
    }

    /// Members whose mark says they are draining in their current life.
    fn draining_peers(&self) -> Vec<NodeId> {
        let read = self.mesh.view();
        let snap = self.mesh.snapshot();
        draining_members(&snap.members, |k| read.get(Table::NODES, k)?.value.clone()).0
    }
}

/// One hand-over walk's copies in flight. A member that will not take
/// its copies is dropped from the walk, and the keys of its unanswered
/// copies go to the next member in their ranking, the owner they will have
/// once membership sees that one gone, as a write's stand-in does
/// (`Cache::send_request`):
/// - one that refuses the connection (killed, or gone, moments before the
///   stop, which this node's view still holds): its copies come back
///   unsent, through their receipts;
/// - one that stopped answering (a machine hung or without power, which
///   refuses nothing): once membership suspects it, looked at every
///   [`LOOK`] while answers are awaited.
///
/// Before, such copies waited out the whole bound for acknowledgements
/// that could not come (and a hung member's held up the rest of the walk
/// past [`IN_FLIGHT`]); in a bucket of one copy their keys went with the
/// stop.
struct Walk<'a> {
    cache: &'a Arc<Cache>,
    live: Arc<Live>,
    /// The members to hand to, less those dropped.
    after: Vec<NodeId>,
    /// Each member's request id and unanswered copies.
    out: Vec<Out>,
    deadline: Instant,
    acks: mpsc::Receiver<CacheMessage>,
    /// Members whose copies were dropped unsent. Each such copy also
    /// answers on `acks` as not stored, so one wait sees both.
    unsent: Arc<Mutex<Vec<NodeId>>>,
    answers: mpsc::Sender<CacheMessage>,
    /// Keys to place again, their copy to a dropped member lost.
    retry: Vec<(String, String)>,
    done: HandedOver,
}

/// Those of `members` that membership suspects or has lost, while another
/// of them remains (none else): the members a hand-over leaves out.
fn gone_while_others_remain(live: &Live, members: &[NodeId]) -> Vec<NodeId> {
    let gone = |n: &NodeId| live.suspected(*n) || !live.ids().contains(n);
    if members.iter().all(gone) {
        return Vec::new();
    }
    members.iter().copied().filter(gone).collect()
}

/// How often a walk waiting for answers looks for members membership has
/// come to suspect, or lost.
const LOOK: Duration = Duration::from_millis(200);

/// The copies sent to one member, oldest first, and how many it answered:
/// a member answers the copies of one connection in the order they came.
struct Out {
    node: NodeId,
    request: u64,
    keys: Vec<(String, String)>,
    answered: usize,
}

impl Walk<'_> {
    fn in_flight(&self) -> u64 {
        self.out
            .iter()
            .map(|o| (o.keys.len() - o.answered) as u64)
            .sum()
    }

    /// Hands to `node` no more; its unanswered copies' keys are placed again.
    fn drop_member(&mut self, node: NodeId) {
        self.after.retain(|n| *n != node);
        if let Some(o) = self.out.iter_mut().find(|o| o.node == node) {
            self.retry.append(&mut o.keys.split_off(o.answered));
            o.keys.clear();
            o.answered = 0;
        }
        if self.after.is_empty() {
            self.retry.clear();
        }
    }

    /// Drops the members membership now suspects or has lost, by the rule
    /// the walk started with.
    fn drop_suspects(&mut self) {
        for node in gone_while_others_remain(&self.cache.live(), &self.after) {
            self.drop_member(node);
        }
    }

    /// Sends a copy to each of the key's first `replicas` members in
    /// `after` that take it: one refused at once (its back-off after a
    /// refused connection runs) is skipped for the next, here and for
    /// every later key.
    async fn place(&mut self, bucket: String, key: String, entry: CacheEntry) {
        let replicas = self.cache.bucket(&bucket).unwrap_or_default().replicas;
        let ranked = rank(&bucket, &key, &self.after);
        let mut message = CacheMessage::Put {
            request: 0,
            bucket: bucket.clone(),
            key: key.clone(),
            entry,
            ack: true,
            reply_to: self.cache.addr,
        };
        let mut placed = 0;
        for node in ranked {
            if placed >= replicas.max(1) {
                break;
            }
            let Some(addr) = self.live.addr(node) else {
                continue;
            };
            let Some(at) = self.out.iter().position(|o| o.node == node) else {
                continue;
            };
            let request = self.out[at].request;
            if let CacheMessage::Put { request: r, .. } = &mut message {
                *r = request;
            }
            loop {
                let (unsent, tx) = (self.unsent.clone(), self.answers.clone());
                let receipt: Receipt = Box::new(move || {
                    unsent
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(node);
                    let _ = tx.try_send(CacheMessage::Ack {
                        request,
                        stored: false,
                    });
                });
                let sent = self.cache.streams.send_if_reachable(
                    addr,
                    Channel::Cache,
                    message.encode(),
                    Some(receipt),
                );
                match sent {
                    Ok(()) => {
                        self.done.sent += 1;
                        self.out[at].keys.push((bucket.clone(), key.clone()));
                        placed += 1;
                    }
                    Err(SendError::Unreachable { .. }) => self.drop_member(node),
                    // A full queue empties as answers come back: wait for
                    // one and try again (none outstanding: it will not;
                    // nor to a member the wait dropped).
                    Err(_) => {
                        if self.in_flight() > 0
                            && self.wait_one().await
                            && self.after.contains(&node)
                        {
                            continue;
                        }
                    }
                }
                break;
            }
        }
    }

    /// Places again the keys whose copy came back unsent, as they are now.
    async fn place_again(&mut self) {
        while let Some((bucket, key)) = self.retry.pop() {
            let entry = self.cache.store().get(&bucket, &key, wall_ms());
            if let Some(entry) = entry {
                self.place(bucket, key, entry).await;
            }
        }
    }

    /// Waits for one answer, or [`LOOK`], until the deadline; false when
    /// the time is up or no answer can come. A refusal (the owner holds a
    /// newer version) is an answer, not a stored copy. A copy back unsent
    /// drops its member; so does suspicion, looked for when no answer came.
    async fn wait_one(&mut self) -> bool {
        let until = self.deadline.min(Instant::now() + LOOK);
        match tokio::time::timeout_at(until, self.acks.recv()).await {
            Ok(Some(CacheMessage::Ack { request, stored })) => {
                let unsent = std::mem::take(
                    &mut *self.unsent.lock().unwrap_or_else(PoisonError::into_inner),
                );
                for node in unsent {
                    self.drop_member(node);
                }
                // A dropped member's answers find nothing left to answer.
                if let Some(o) = self.out.iter_mut().find(|o| o.request == request)
                    && o.answered < o.keys.len()
                {
                    o.answered += 1;
                    if o.answered == o.keys.len() {
                        // All answered: the keys need not be kept.
                        o.keys.clear();
                        o.answered = 0;
                    }
                    self.done.acked += u64::from(stored);
                }
                true
            }
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(_) if until >= self.deadline => false,
            Err(_) => {
                self.drop_suspects();
                true
            }
        }
    }
}
