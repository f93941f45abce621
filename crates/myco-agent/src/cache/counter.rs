//! Counters (`INCR`): the sum is made on the key's primary, under its
//! store's lock, so increments from every node apply one after another;
//! the asker then copies the new version to the other owners as a write.
//!
//! Failure semantics, as Redis has them across a failover: an increment
//! whose primary does not answer (down and not yet seen so, or running a
//! release without counters, which drops the message) fails with 503 and
//! may or may not have been applied; it is not retried on a replica,
//! which could apply it twice. Once the primary is seen down the next
//! owner, which holds the last copied version, takes over.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use myco_core::cache::counter;
use myco_core::cache::owners;
use myco_proto::cache::{CacheEntry, CacheMessage, CounterError, check_entry};

use super::remote::{Registered, Waiter};
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
        let owners = owners(bucket, key, live.ids(), config.replicas);
        let Some(&primary) = owners.first() else {
            return Err(CacheError::Unavailable(format!(
                "no live owner for {bucket}/{key}"
            )));
        };
        let entry = if primary == self.me {
            self.increment_here(bucket, key, by, config.ttl_ms)
                .map_err(CacheError::from)
        } else {
            let addr = live.iter().find(|(id, _)| *id == primary).map(|(_, a)| *a);
            self.ask_primary(addr, bucket, key, by, config.ttl_ms).await
        };
        match &entry {
            Ok(_) => self.counters.increments.fetch_add(1, Ordering::Relaxed),
            Err(CacheError::Counter(_)) => self
                .counters
                .increments_refused
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => 0,
        };
        let entry = entry?;
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

    /// Adds on this node's store, atomically (the key's primary does).
    pub(super) fn increment_here(
        &self,
        bucket: &str,
        key: &str,
        by: i64,
        ttl_ms: u64,
    ) -> Result<CacheEntry, CounterError> {
        let ts = self.tick();
        let now = wall_ms();
        let max = self.bucket(bucket).unwrap_or_default().max_entries;
        let mut store = self.store();
        let current = store.get(bucket, key, now);
        let (entry, _) = counter::increment(current.as_ref(), by, ts, now, ttl_ms)?;
        store.put(bucket, max, key, entry.clone(), now);
        Ok(entry)
    }

    /// Sends the increment to the key's primary and waits for the version
    /// it made.
    async fn ask_primary(
        self: &Arc<Self>,
        to: Option<std::net::SocketAddr>,
        bucket: &str,
        key: &str,
        by: i64,
        ttl_ms: u64,
    ) -> Result<CacheEntry, CacheError> {
        let request = self.request_id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _registered = Registered::new(self, request, Waiter::One(Some(tx)));
        let message = CacheMessage::Incr {
            request,
            bucket: bucket.to_string(),
            key: key.to_string(),
            by,
            ttl_ms,
            reply_to: self.addr,
        };
        let unanswered = || {
            CacheError::Unavailable(format!(
                "the primary of {bucket}/{key} did not answer the increment (it may have been applied)"
            ))
        };
        if !to.is_some_and(|a| self.send(a, &message)) {
            return Err(CacheError::Unavailable(format!(
                "the increment of {bucket}/{key} could not be sent to its primary"
            )));
        }
        self.counters.forwards.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
            Ok(Ok(CacheMessage::Counted { outcome, .. })) => Ok(outcome?),
            _ => Err(unanswered()),
        }
    }
}
