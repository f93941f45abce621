//! The cache operations every front end shares (HTTP, the Redis
//! protocol, embedders).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use myco_core::cache::rank;
use myco_proto::Table;
use myco_proto::cache::{
    BucketConfig, CacheEntry, CacheMessage, DEFAULT_BUCKET, check_bucket, check_entry,
};
use tokio::sync::mpsc;

use super::remote::{Registered, Waiter};
use super::{
    Cache, CacheError, KNOWN_ROUND, OWNER_TIMEOUT, READ_REPAIR_EVERY, TOMBSTONE_MS,
    UNKNOWN_BUCKET_WAIT, WRITE_TIMEOUT, wall_ms,
};

/// A key's remaining lifetime, as Redis `TTL` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// No such key (or expired).
    Missing,
    /// The key never expires.
    Forever,
    /// Milliseconds left.
    Ms(u64),
}

impl Cache {
    /// Creates or changes a bucket; answered once the config is durable
    /// here and every live member holds it (or, if one does not say so,
    /// after [`UNKNOWN_BUCKET_WAIT`]: the config still replicates).
    pub async fn create_bucket(&self, name: &str, config: BucketConfig) -> Result<(), CacheError> {
        self.store_bucket(name, config).await?;
        self.until_known(name, config).await;
        Ok(())
    }

    /// Writes a bucket's config to the replicated state.
    async fn store_bucket(&self, name: &str, config: BucketConfig) -> Result<(), CacheError> {
        check_bucket(name)?;
        config.validate()?;
        let json = serde_json::to_vec(&config).expect("a bucket config always encodes");
        self.mesh
            .write(Table::CACHE_BUCKETS, name, Some(json))
            .await?;
        Ok(())
    }

    /// Asks every other live member whether it holds `config` for `name`,
    /// again every [`KNOWN_ROUND`] for those that do not yet, until all do
    /// or [`UNKNOWN_BUCKET_WAIT`] has passed. Without it, a Redis client
    /// on another node writing `name:key` a moment after the bucket was
    /// created could land in bucket `default`.
    async fn until_known(&self, name: &str, config: BucketConfig) {
        let deadline = tokio::time::Instant::now() + UNKNOWN_BUCKET_WAIT;
        let mut waiting: Vec<std::net::SocketAddr> = self
            .live()
            .iter()
            .filter(|(id, _)| *id != self.me)
            .map(|(_, a)| *a)
            .collect();
        while !waiting.is_empty() {
            let round = (tokio::time::Instant::now() + KNOWN_ROUND).min(deadline);
            let (tx, mut rx) = mpsc::channel(waiting.len());
            let mut asked = Vec::with_capacity(waiting.len());
            for to in &waiting {
                let request = self.request_id();
                let registered = Registered::new(self, request, Waiter::Many(tx.clone()));
                let message = CacheMessage::Known {
                    request,
                    bucket: name.to_string(),
                    config,
                    reply_to: self.addr,
                };
                if self.send(*to, &message) {
                    asked.push((request, *to, registered));
                }
            }
            drop(tx);
            let mut answered = 0;
            while answered < asked.len() {
                match tokio::time::timeout_at(round, rx.recv()).await {
                    Ok(Some(CacheMessage::Ack { request, stored })) => {
                        answered += 1;
                        if stored
                            && let Some((_, to, _)) = asked.iter().find(|(r, ..)| *r == request)
                        {
                            waiting.retain(|a| a != to);
                        }
                    }
                    Ok(Some(_)) => answered += 1,
                    Ok(None) | Err(_) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(
                    bucket = name,
                    missing = waiting.len(),
                    "bucket config not confirmed by every member in time; it still replicates"
                );
                return;
            }
            if !waiting.is_empty() {
                tokio::time::sleep_until(round).await;
            }
        }
    }

    /// A bucket's config, as this node's replica knows it. Parsed once
    /// per published view of the state (every GET and SET asks, twice for
    /// a Redis key with a colon; a view changes only on a write).
    pub fn bucket(&self, name: &str) -> Option<BucketConfig> {
        let view = self.mesh.view();
        let mut known = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        // The weak reference keeps the old view's allocation, so a new
        // view can never sit at the same address.
        if known.0.as_ptr() != Arc::as_ptr(&view) {
            known.0 = Arc::downgrade(&view);
            known.1.clear();
        }
        if let Some(config) = known.1.get(name) {
            return *config;
        }
        let config = view
            .get(Table::CACHE_BUCKETS, name)
            .and_then(|e| serde_json::from_slice(e.value.as_deref()?).ok());
        // Names asked for that are not buckets are remembered too (any
        // Redis key with a colon asks): bounded.
        if known.1.len() >= super::KNOWN_CONFIGS {
            known.1.clear();
        }
        known.1.insert(name.to_string(), config);
        config
    }

    /// Every bucket this node knows, with its config.
    pub fn buckets(&self) -> Vec<(String, BucketConfig)> {
        self.mesh
            .scan(Table::CACHE_BUCKETS, "", 10_000)
            .into_iter()
            .filter_map(|(k, e)| Some((k, serde_json::from_slice(e.value.as_deref()?).ok()?)))
            .collect()
    }

    /// The bucket's config; `default` is created on first use.
    pub(super) async fn config(&self, bucket: &str) -> Result<BucketConfig, CacheError> {
        check_bucket(bucket)?;
        match self.bucket(bucket) {
            Some(c) => Ok(c),
            None if bucket == DEFAULT_BUCKET => {
                let c = BucketConfig::default();
                // Every node makes it alike on first use: nothing to wait for.
                self.store_bucket(bucket, c).await?;
                Ok(c)
            }
            None => self
                .bucket_soon(bucket)
                .await
                .ok_or_else(|| CacheError::NoBucket(bucket.to_string())),
        }
    }

    /// [`Cache::bucket`], waiting up to [`UNKNOWN_BUCKET_WAIT`] for a
    /// bucket this node does not know yet: one created on another node
    /// a moment ago replicates within milliseconds, and a client that
    /// creates it there and uses it here at once (a script, a test) should
    /// not be told there is none. The other live members are asked
    /// whether they know it ([`CacheMessage::Exists`]): when none does,
    /// the answer is "none" at once (a creation is answered only once
    /// every live member knows the bucket, so none knowing it means no
    /// creation was answered); a lone node has nobody to ask.
    pub async fn bucket_soon(&self, name: &str) -> Option<BucketConfig> {
        if check_bucket(name).is_err() || self.live().ids().len() < 2 {
            return self.bucket(name);
        }
        let mut views = self.mesh.views();
        let deadline = tokio::time::Instant::now() + UNKNOWN_BUCKET_WAIT;
        // Not the members membership suspects: one that stopped answering
        // would hold a typo's 404 for the whole wait. Were every peer a
        // suspect, none is asked and the wait runs out as before.
        let live = self.live();
        let peers: Vec<std::net::SocketAddr> = live
            .iter()
            .filter(|(id, _)| *id != self.me && !live.suspected(*id))
            .map(|(_, a)| *a)
            .collect();
        let request = self.request_id();
        let mut waiting = self.wait_many(request, peers.len());
        let message = CacheMessage::Exists {
            request,
            bucket: name.to_string(),
            reply_to: self.addr,
        };
        let asked = peers.iter().filter(|a| self.send(**a, &message)).count();
        // Until a member says it knows the bucket (then its config is on
        // the way) or every one asked says it does not.
        let (mut unknown, mut known_elsewhere) = (0, asked == 0);
        loop {
            if let Some(config) = self.bucket(name) {
                return Some(config);
            }
            if !known_elsewhere && unknown == asked {
                return None;
            }
            tokio::select! {
                answer = waiting.rx.recv(), if !known_elsewhere => match answer {
                    Some(CacheMessage::Ack { stored: true, .. }) => known_elsewhere = true,
                    Some(_) => unknown += 1,
                    None => known_elsewhere = true,
                },
                changed = views.changed() => if changed.is_err() {
                    return None;
                },
                () = tokio::time::sleep_until(deadline) => return self.bucket(name),
            }
        }
    }

    /// The live value of a key, from its owners.
    pub async fn get(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.get_with_expiry(bucket, key).await?.map(|(v, _)| v))
    }

    /// The live value of a key and when it expires (wall-clock ms;
    /// `None`: never), from its owners: what a write that depends on the
    /// key reads first (Redis' `SET ... NX`, `GET`, `KEEPTTL`, `EXPIRE ...
    /// GT`).
    pub async fn get_with_expiry(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<u64>)>, CacheError> {
        let found = self
            .lookup(bucket, key)
            .await?
            .and_then(|e| Some((e.value?, e.expires_at_ms)));
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }

    /// Stores a value; `ttl_ms` overrides the bucket's (0: never expires).
    pub async fn set(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), CacheError> {
        self.put(bucket, key, value, |config| {
            let ttl = ttl_ms.unwrap_or(config.ttl_ms);
            (ttl > 0).then(|| wall_ms().saturating_add(ttl))
        })
        .await
    }

    /// Stores a value that expires at wall-clock `expires_at_ms` (`None`:
    /// never; the bucket's TTL does not apply), for a caller that holds
    /// an instant rather than a lifetime (Redis' `KEEPTTL`, `EXAT`).
    pub async fn set_until(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
    ) -> Result<(), CacheError> {
        self.put(bucket, key, value, |_| expires_at_ms).await
    }

    async fn put(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        expiry: impl FnOnce(&BucketConfig) -> Option<u64>,
    ) -> Result<(), CacheError> {
        let config = self.config(bucket).await?;
        check_entry(key, Some(&value))?;
        let entry = CacheEntry {
            ts: self.tick(),
            value: Some(value),
            expires_at_ms: expiry(&config),
        };
        self.write(bucket, key, entry, config).await
    }

    /// Deletes a key; true if it held a live value.
    pub async fn delete(self: &Arc<Self>, bucket: &str, key: &str) -> Result<bool, CacheError> {
        let config = self.config(bucket).await?;
        check_entry(key, None)?;
        let existed = self
            .lookup(bucket, key)
            .await?
            .is_some_and(|e| e.value.is_some());
        let entry = CacheEntry {
            ts: self.tick(),
            value: None,
            expires_at_ms: Some(wall_ms() + TOMBSTONE_MS.max(config.ttl_ms)),
        };
        self.write(bucket, key, entry, config).await?;
        Ok(existed)
    }

    /// Gives a live key a new lifetime (0: never expires); false if absent.
    pub async fn expire(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Result<bool, CacheError> {
        let config = self.config(bucket).await?;
        let Some(old) = self.lookup(bucket, key).await? else {
            return Ok(false);
        };
        if old.value.is_none() {
            return Ok(false);
        }
        let entry = CacheEntry {
            ts: self.tick(),
            value: old.value,
            expires_at_ms: (ttl_ms > 0).then(|| wall_ms().saturating_add(ttl_ms)),
        };
        self.write(bucket, key, entry, config).await?;
        Ok(true)
    }

    /// A key's remaining lifetime.
    pub async fn ttl(self: &Arc<Self>, bucket: &str, key: &str) -> Result<Ttl, CacheError> {
        Ok(match self.lookup(bucket, key).await? {
            Some(CacheEntry {
                value: Some(_),
                expires_at_ms: None,
                ..
            }) => Ttl::Forever,
            Some(CacheEntry {
                value: Some(_),
                expires_at_ms: Some(at),
                ..
            }) => Ttl::Ms(at.saturating_sub(wall_ms())),
            _ => Ttl::Missing,
        })
    }

    /// Writes a version on the key's owners; answered once two of them
    /// (or all, if fewer) hold it.
    async fn write(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        entry: CacheEntry,
        config: BucketConfig,
    ) -> Result<(), CacheError> {
        self.write_held(bucket, key, entry, config, None).await
    }

    /// [`Cache::write`], where `held_by` (an owner that made the version,
    /// such as a counter's primary) holds it already: it counts as one
    /// acknowledgement and is not sent it again.
    ///
    /// An owner that cannot be sent to (it refused the last connection) or
    /// has not answered within [`OWNER_TIMEOUT`] gets a stand-in: the next
    /// member in the key's ranking. Rendezvous ranks do not move when a
    /// member goes, so that member is the owner the key will have once
    /// membership sees the silent one down: a write just after an owner is
    /// killed is answered in at most [`OWNER_TIMEOUT`], not refused. If the
    /// owner was only slow, it still stores its copy when the message
    /// arrives, and the stand-in's extra copy is handed over and dropped
    /// by the stray walk (see `rebalance`).
    pub(super) async fn write_held(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        entry: CacheEntry,
        config: BucketConfig,
        held_by: Option<myco_proto::NodeId>,
    ) -> Result<(), CacheError> {
        let live = self.live();
        let ranked = rank(bucket, key, live.ids());
        let owners = usize::from(config.replicas.max(1)).min(ranked.len());
        let need = owners.min(2);
        let request = self.request_id();
        let mut waiting = self.wait_many(request, ranked.len().max(1));
        let message = CacheMessage::Put {
            request,
            bucket: bucket.to_string(),
            key: key.to_string(),
            entry: entry.clone(),
            ack: true,
            reply_to: self.addr,
        };
        // Hands the version to one member: held (1, 0), sent (0, 1), or
        // neither (a queue refused it, or its node refused the last
        // connection). A suspect gets its copy unacknowledged, not waited
        // on: if it was only slow it holds the version, and if it is gone
        // the stand-in asked at once does.
        let offer = |node: myco_proto::NodeId| {
            if Some(node) == held_by {
                (1, 0)
            } else if node == self.me {
                self.store_here(
                    bucket,
                    config.max_entries,
                    key,
                    entry.clone(),
                    wall_ms(),
                    true,
                );
                (1, 0)
            } else if live.suspected(node) {
                self.send_copy(&live, node, bucket, key, &entry);
                (0, 0)
            } else if live
                .addr(node)
                .is_some_and(|a| self.send_request(a, message.encode(), request))
            {
                self.counters.forwards.fetch_add(1, Ordering::Relaxed);
                (0, 1)
            } else {
                (0, 0)
            }
        };
        let (mut acked, mut pending) = (0, 0);
        for node in &ranked[..owners] {
            let (a, p) = offer(*node);
            (acked, pending) = (acked + a, pending + p);
        }
        let mut next = owners;
        let start = tokio::time::Instant::now();
        let (slow, deadline) = (start + OWNER_TIMEOUT, start + WRITE_TIMEOUT);
        let mut stood_in = false;
        loop {
            // Members past the owners stand in for those that could not be
            // sent to at once, and (after OWNER_TIMEOUT) for those too slow
            // to answer, each missing acknowledgement getting one.
            while acked + pending < need && next < ranked.len() {
                let (a, p) = offer(ranked[next]);
                (acked, pending) = (acked + a, pending + p);
                next += 1;
                stood_in = true;
            }
            if acked >= need || pending == 0 {
                break;
            }
            let waiting_for_owners = !stood_in && next < ranked.len();
            let until = if waiting_for_owners { slow } else { deadline };
            match tokio::time::timeout_at(until, waiting.rx.recv()).await {
                Ok(Some(CacheMessage::Ack { stored: true, .. })) => {
                    acked += 1;
                    pending -= 1;
                }
                Ok(Some(_)) => pending -= 1,
                Ok(None) => break,
                Err(_) if waiting_for_owners => {
                    stood_in = true;
                    let missing = need - acked;
                    for _ in 0..missing {
                        if let Some(node) = ranked.get(next) {
                            let (a, p) = offer(*node);
                            (acked, pending) = (acked + a, pending + p);
                            next += 1;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        if stood_in && acked >= need {
            self.counters
                .stand_in_writes
                .fetch_add(1, Ordering::Relaxed);
        }
        if acked < need {
            return Err(CacheError::Unavailable(format!(
                "{acked} of the {need} owners needed acknowledged the write of {bucket}/{key}"
            )));
        }
        Ok(())
    }

    /// The version of a key the first ranked member holding it has (a
    /// tombstone is `Some` with no value; expired ones are `None`). Asks
    /// the owners, then one member past them (a key's old owner during a
    /// move), in rank order; repairs owners that missed it.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
    ) -> Result<Option<CacheEntry>, CacheError> {
        let config = self.config(bucket).await?;
        check_entry(key, None)?;
        let live = self.live();
        let ranked = rank(bucket, key, live.ids());
        let owners = usize::from(config.replicas.max(1));
        let mut missed = Vec::new();
        // Owners that answered: a miss is only reported when one of them
        // says so. The member past them may be an old owner still holding
        // the key, but its "no" alone says nothing (under load, with every
        // owner slow to answer, it made a held key look absent).
        let mut answered = 0;
        // In rank order, suspects last: a suspect may be a machine that
        // lost power, whose answer would take the whole owner timeout.
        let candidates = ranked.iter().take(owners + 1).enumerate();
        let order = candidates
            .clone()
            .filter(|(_, n)| !live.suspected(**n))
            .chain(candidates.filter(|(_, n)| live.suspected(**n)));
        for (place, node) in order {
            let found = if *node == self.me {
                self.store().get(bucket, key, wall_ms())
            } else {
                match live.addr(*node) {
                    Some(a) => match self.ask(a, bucket, key).await {
                        Some(found) => found,
                        None => continue,
                    },
                    None => continue,
                }
            };
            if place < owners {
                answered += 1;
            }
            match found {
                Some(entry) => {
                    if place > 0 {
                        self.counters.fallback_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    self.repair(bucket, key, &entry, &missed, &live, config.max_entries);
                    // Owners ranked below the one that answered were not
                    // asked; now and then, ask them after answering, so a
                    // stale copy (here or there) gets the newest version.
                    let unasked: Vec<_> = ranked
                        .iter()
                        .take(owners)
                        .skip(place + 1)
                        .copied()
                        .collect();
                    if !unasked.is_empty()
                        && self
                            .reads
                            .fetch_add(1, Ordering::Relaxed)
                            .is_multiple_of(READ_REPAIR_EVERY)
                        && self.repair_check_due()
                    {
                        let (cache, bucket, key) =
                            (self.clone(), bucket.to_string(), key.to_string());
                        let (found, max, copy) = (*node, config.max_entries, entry.clone());
                        tokio::spawn(async move {
                            cache
                                .repair_stale(&bucket, &key, found, copy, unasked, max)
                                .await;
                        });
                    }
                    return Ok(Some(entry));
                }
                None if place < owners => missed.push(*node),
                None => {}
            }
        }
        if answered == 0 && !ranked.is_empty() {
            return Err(CacheError::Unavailable(format!(
                "no owner of {bucket}/{key} answered"
            )));
        }
        Ok(None)
    }

    /// Whether a read-repair check may start now: at most one a
    /// millisecond per node. Under a heavy read load one read in
    /// [`READ_REPAIR_EVERY`] was thousands of extra forwarded reads a
    /// second, which cost a local GET a quarter of its throughput.
    fn repair_check_due(&self) -> bool {
        let now = wall_ms();
        let last = self.last_repair_check.load(Ordering::Relaxed);
        now != last
            && self
                .last_repair_check
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Sends `entry` to owners that answered without it (read-repair).
    pub(super) fn repair(
        &self,
        bucket: &str,
        key: &str,
        entry: &CacheEntry,
        missed: &[myco_proto::NodeId],
        live: &super::Live,
        max_entries: u64,
    ) {
        for node in missed {
            self.counters.read_repairs.fetch_add(1, Ordering::Relaxed);
            if *node == self.me {
                self.store_here(bucket, max_entries, key, entry.clone(), wall_ms(), true);
                continue;
            }
            self.send_copy(live, *node, bucket, key, entry);
        }
    }

    /// Sends one node the message `make` builds around a fresh request id
    /// and waits up to `wait` for its one answer: `None` if the message
    /// could not be queued, `Some(None)` if no answer came in time.
    pub(super) async fn request_one(
        self: &Arc<Self>,
        to: std::net::SocketAddr,
        wait: std::time::Duration,
        make: impl FnOnce(u64) -> CacheMessage,
    ) -> Option<Option<CacheMessage>> {
        let request = self.request_id();
        let mut waiting = self.wait_one(request);
        if !self.send_request(to, make(request).encode(), request) {
            return None;
        }
        self.counters.forwards.fetch_add(1, Ordering::Relaxed);
        Some(
            tokio::time::timeout(wait, &mut waiting.rx)
                .await
                .ok()
                .and_then(Result::ok),
        )
    }
}
