//! Counters (`INCR`): the sum is made on the key's primary, under its
//! store's lock, so increments from every node apply one after another;
//! the asker then copies the new version to the other owners as a write.
//!
//! A primary that holds no version of the key (it may have just become
//! the primary, with the key still on its old owner) answers `NotHeld`
//! unless the asker already looked; the asker then looks as a read does
//! (owners, then the member past them) and asks again with what it found,
//! and the primary adds to the newer of that and its own. So a counter
//! counts on through a join instead of starting again from 0; a key that
//! truly has no value pays that one look on its first increment.
//!
//! Failure semantics, as Redis has them across a failover: an increment
//! whose primary does not answer (down and not yet seen so, or running a
//! release without counters, which drops the message) fails with 503 and
//! may or may not have been applied; it is not retried on a replica,
//! which could apply it twice. One that could not be sent to the primary
//! at all (it refused the connection: killed, not yet seen down) was not
//! applied there, so the next ranked member counts it: the owner that
//! takes over once the primary is seen down, holding the last copied
//! version.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use myco_core::cache::counter;
use myco_core::cache::rank;
use myco_proto::cache::{CacheEntry, CacheMessage, IncrOutcome, check_entry};

use super::{Cache, CacheError, WRITE_TIMEOUT, wall_ms};

impl Cache {
    /// Adds `by` to the integer `key` holds (absent, deleted or expired
    /// counts as 0) and answers the sum, once two owners hold it as a
    /// write is. A new counter takes the bucket's TTL; a live one keeps
    /// its own.
    pub async fn incr(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        by: i64,
    ) -> Result<i64, CacheError> {
        let config = self.config(bucket).await?;
        check_entry(key, None)?;
        let live = self.live();
        let ranked = rank(bucket, key, live.ids());
        // The primary counts; if the increment could not be sent to it
        // (it refused the connection: killed, and not yet seen down), it
        // was not applied there, and the next ranked member counts
        // instead: the primary the key gets once the dead one is seen
        // down, holding the last copied version.
        let mut candidates = ranked.iter();
        let (primary, outcome) = loop {
            let Some(&primary) = candidates.next() else {
                return Err(CacheError::Unavailable(format!(
                    "no member could be reached to count {bucket}/{key}"
                )));
            };
            let addr = live.addr(primary);
            let counted = self.count_at(primary, addr, bucket, key, by, config.ttl_ms);
            if let Some(outcome) = counted.await? {
                break (primary, outcome);
            }
        };
        let entry = match outcome {
            IncrOutcome::Stored(entry) => entry,
            IncrOutcome::Refused(e) => {
                self.counters
                    .increments_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
            IncrOutcome::NotHeld => {
                return Err(CacheError::Unavailable(format!(
                    "the primary of {bucket}/{key} would not count from what it was sent"
                )));
            }
        };
        self.counters.increments.fetch_add(1, Ordering::Relaxed);
        let sum = entry
            .value
            .as_deref()
            .map(counter::parse)
            .transpose()?
            .unwrap_or_default();
        self.write_held(bucket, key, entry, config, Some(primary))
            .await?;
        Ok(sum)
    }

    /// The increment as `primary` (this node or the one at `addr`) makes
    /// it: `None` if it could not be sent there (so not applied). First as
    /// is; if the primary holds nothing, the key may still be on its old
    /// owner (a member joined): look as a read does, then ask again with
    /// what was found.
    async fn count_at(
        self: &Arc<Self>,
        primary: myco_proto::NodeId,
        addr: Option<std::net::SocketAddr>,
        bucket: &str,
        key: &str,
        by: i64,
        ttl_ms: u64,
    ) -> Result<Option<IncrOutcome>, CacheError> {
        let mut looked: Option<Option<CacheEntry>> = None;
        loop {
            let outcome = if primary == self.me {
                let base = looked.as_ref().map(Option::as_ref);
                Some(self.increment_here(bucket, key, by, ttl_ms, base))
            } else {
                self.ask_primary(addr, bucket, key, by, ttl_ms, looked.clone())
                    .await?
            };
            match outcome {
                Some(IncrOutcome::NotHeld) if looked.is_none() => {
                    looked = Some(self.lookup(bucket, key).await?);
                }
                other => return Ok(other),
            }
        }
    }

    /// Adds on this node's store, atomically (the key's primary does).
    /// `looked` is `None` when the asker has not looked for the key
    /// elsewhere (then a key held nothing of is [`IncrOutcome::NotHeld`]),
    /// else what it found: the sum starts from the newer of that and what
    /// this node holds.
    pub(super) fn increment_here(
        &self,
        bucket: &str,
        key: &str,
        by: i64,
        ttl_ms: u64,
        looked: Option<Option<&CacheEntry>>,
    ) -> IncrOutcome {
        let ts = self.tick();
        let now = wall_ms();
        let max = self.bucket(bucket).unwrap_or_default().max_entries;
        let mut store = self.store();
        let held = store.get(bucket, key, now);
        let Some(found) = looked.or(held.is_some().then_some(None)) else {
            return IncrOutcome::NotHeld;
        };
        let from = counter::newer(held.as_ref(), found);
        match counter::increment(from, by, ts, now, ttl_ms) {
            Ok((entry, _)) => {
                store.put(bucket, max, key, entry.clone(), now);
                drop(store);
                self.stored(bucket, key, Some(&entry), self.changed.recent(now));
                IncrOutcome::Stored(entry)
            }
            Err(e) => IncrOutcome::Refused(e),
        }
    }

    /// Sends the increment to the key's primary and waits for its answer:
    /// `None` if it was never sent (so not applied there).
    async fn ask_primary(
        self: &Arc<Self>,
        to: Option<std::net::SocketAddr>,
        bucket: &str,
        key: &str,
        by: i64,
        ttl_ms: u64,
        looked: Option<Option<CacheEntry>>,
    ) -> Result<Option<IncrOutcome>, CacheError> {
        let answer = match to {
            Some(to) => {
                self.request_one(to, WRITE_TIMEOUT, |request| CacheMessage::Incr {
                    request,
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    by,
                    ttl_ms,
                    checked: looked.is_some(),
                    base: looked.flatten(),
                    reply_to: self.addr,
                })
                .await
            }
            None => None,
        };
        match answer {
            // Refused before it was queued, or its receipt: never sent.
            None | Some(Some(CacheMessage::Ack { .. })) => Ok(None),
            Some(Some(CacheMessage::Counted { outcome, .. })) => Ok(Some(outcome)),
            Some(_) => Err(CacheError::Unavailable(format!(
                "the primary of {bucket}/{key} did not answer the increment (it may have been applied)"
            ))),
        }
    }
}
