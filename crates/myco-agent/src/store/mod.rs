//! The durable store under a node's replicated state.
//!
//! The core holds the last-writer-wins tables in memory and decides merges;
//! this store only keeps the latest version of every `(table, key)` on disk
//! and hands everything back at start. It is a redb file written by one
//! thread:
//!
//! - **Group commit.** [`Store::persist`] and a [`Backlog`] (the background
//!   work: merged changes, removals) queue requests on a bounded channel. The writer takes everything queued
//!   (up to [`MAX_BATCH_CHANGES`] / [`MAX_BATCH_BYTES`]), writes it in one
//!   transaction with immediate durability, then answers every waiter, so N
//!   concurrent writers share one commit instead of paying one each.
//! - **Durability.** `persist` returns only once the commit is on disk
//!   (fsynced), so a write acknowledged after it survives SIGKILL and power
//!   loss. Commits are two-phase: a primary commit slot that fails its
//!   checksum is then always damage, never a commit torn by a crash, so
//!   damage is reported instead of silently rolled back to an older commit.
//! - **Newest wins on disk too.** A change is written only if it is newer
//!   than the stored version of its key.
//! - **Damage.** A file that cannot be opened or fails redb's integrity
//!   check is moved aside and the store starts empty ([`Recovery`]); the node
//!   then resyncs from peers. Undecodable records are skipped and counted.
//! - **Idle means idle:** no timers; nothing is written without a request.

mod backlog;
mod disk;

pub use backlog::Backlog;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use myco_proto::{Change, Table, Timestamp};
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use disk::{CHANGES, open_db, stored_ts};
use myco_proto::store_record::{DiskRecord, encode_key};

/// Requests (not changes) the queue holds before `persist` waits and
/// background work waits in its [`Backlog`].
const QUEUE: usize = 1024;
/// A transaction stops taking requests past this many changes...
pub const MAX_BATCH_CHANGES: usize = 4096;
/// ...or this many bytes (a single larger request is still written whole).
pub const MAX_BATCH_BYTES: usize = 8 << 20;
/// fsyncs per two-phase commit.
const FSYNCS_PER_COMMIT: u64 = 2;

/// A store problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another `Store` in this one) has the file open.
    #[error(
        "store {path} is in use by another process: stop the other myco agent using this data dir, then retry"
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// Written by a newer release whose record format this one cannot read.
    #[error(
        "store {path} holds records in format {version}, which this release cannot read: run a newer myco, or move the file aside to start empty and resync from peers"
    )]
    UnsupportedFormat {
        /// The store file.
        path: PathBuf,
        /// The record format found.
        version: u8,
    },
    /// The file is damaged and could not be moved out of the way.
    #[error(
        "store {path} is damaged and could not be moved aside ({source}): move or delete it by hand, then restart (the state resyncs from peers)"
    )]
    MoveAside {
        /// The store file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file could not be opened for a reason other than damage.
    #[error("cannot open store {path}: {reason}; check permissions, free space and disk health")]
    Open {
        /// The store file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },
    /// A batch could not be made durable; none of its changes is acknowledged.
    #[error(
        "store write failed: {reason}; the changes are not durable (check free space and disk health); the writer reopens the file on the next batch"
    )]
    Write {
        /// What failed.
        reason: String,
    },
    /// The writer thread has stopped.
    #[error("store writer has stopped: restart the agent (see the log for why it stopped)")]
    Closed,
}

/// What [`Store::open`] had to do about a damaged store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The file could not be opened or failed its integrity check: it was
    /// moved aside and the store started empty. Resync from peers.
    MovedAside {
        /// Where the damaged file now is (`<name>.corrupt-<unix_ms>`).
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Records that could not be decoded were skipped (and left on disk, to
    /// be overwritten by the next version of their key).
    SkippedRecords {
        /// How many.
        count: u64,
    },
}

/// What the store held when opened.
#[derive(Debug)]
pub struct Loaded {
    /// The latest stored version of every key, tombstones included.
    pub changes: Vec<Change>,
    /// Set when damage was found and handled; count it and resync.
    pub recovered: Option<Recovery>,
}

/// Counters since the store was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// Changes written (newer than what was stored).
    pub changes_written: u64,
    /// Key and record bytes written; the file itself grows by whole pages.
    pub bytes_written: u64,
    /// fsyncs issued by commits (two per two-phase commit).
    pub fsyncs: u64,
    /// Changes not written because the store had that version or a newer one.
    pub skipped_not_newer: u64,
    /// Records removed by tombstone garbage collection.
    pub removed: u64,
    /// Batches that failed (every waiter got an error).
    pub errors: u64,
    /// Background requests that found the queue full and waited in the backlog.
    pub queue_full: u64,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    changes_written: AtomicU64,
    bytes_written: AtomicU64,
    skipped_not_newer: AtomicU64,
    removed: AtomicU64,
    errors: AtomicU64,
    queue_full: AtomicU64,
}

/// Called on the writer thread once a request's batch is durable (or
/// failed); it must not block. Dropped uncalled if the writer stops first.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

enum Request {
    Write(Vec<Change>, Option<Reply>),
    Remove(Vec<(Table, String, Timestamp)>),
}

/// The handle to the store; its writer thread stops when it is dropped,
/// after writing what is queued. Share it with an `Arc`.
pub struct Store {
    queue: mpsc::Sender<Request>,
    counters: Arc<Counters>,
    stopped: oneshot::Receiver<()>,
}

impl Store {
    /// Opens (or creates) the store at `path` and reads it whole. Blocking:
    /// from async code call it in `spawn_blocking`. Damage is handled, not
    /// returned (see [`Recovery`]); errors are what a restart will not fix.
    pub fn open(path: &Path) -> Result<(Store, Loaded), StoreError> {
        let started = Instant::now();
        let (db, changes, recovered) = disk::open(path)?;
        info!(path = %path.display(), records = changes.len(), elapsed_ms = started.elapsed().as_millis() as u64, "store: opened");

        let (queue, requests) = mpsc::channel(QUEUE);
        let (stop_signal, stopped) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            path: path.to_path_buf(),
            db: Some(db),
            requests,
            counters: counters.clone(),
        };
        std::thread::Builder::new()
            .name("myco-store".into())
            .spawn(move || {
                writer.run();
                drop(stop_signal);
            })
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        let store = Store {
            queue,
            counters,
            stopped,
        };
        Ok((store, Loaded { changes, recovered }))
    }

    /// Writes `changes` and returns once they are durable: acknowledge a
    /// local write only after this returns `Ok`. Waits while the queue is
    /// full. An empty call is a barrier: everything queued before it has
    /// been handled when it returns.
    pub async fn persist(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let reply: Reply = Box::new(move |result| {
            let _ = reply.send(result);
        });
        self.queue
            .send(Request::Write(changes, Some(reply)))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Counters since open.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        let transactions = c.transactions.load(Relaxed);
        StoreStats {
            transactions,
            changes_written: c.changes_written.load(Relaxed),
            bytes_written: c.bytes_written.load(Relaxed),
            fsyncs: transactions * FSYNCS_PER_COMMIT,
            skipped_not_newer: c.skipped_not_newer.load(Relaxed),
            removed: c.removed.load(Relaxed),
            errors: c.errors.load(Relaxed),
            queue_full: c.queue_full.load(Relaxed),
        }
    }

    /// Writes what is queued, then closes the file; when this returns the
    /// file can be opened again.
    pub async fn close(self) {
        let Store { queue, stopped, .. } = self;
        drop(queue);
        let _ = stopped.await;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

/// What one transaction will write.
#[derive(Default)]
struct Batch {
    changes: Vec<Change>,
    removes: Vec<(Table, String, Timestamp)>,
    replies: Vec<Reply>,
    bytes: usize,
}

impl Batch {
    fn add(&mut self, request: Request) {
        match request {
            Request::Write(changes, reply) => {
                self.bytes += changes.iter().map(Change::size).sum::<usize>();
                self.changes.extend(changes);
                self.replies.extend(reply);
            }
            Request::Remove(keys) => {
                self.bytes += keys.iter().map(|(_, k, _)| k.len() + 32).sum::<usize>();
                self.removes.extend(keys);
            }
        }
    }

    fn full(&self) -> bool {
        self.changes.len() + self.removes.len() >= MAX_BATCH_CHANGES
            || self.bytes >= MAX_BATCH_BYTES
    }
}

/// Tallies of one transaction, added to the counters once it is durable.
#[derive(Default)]
struct Tally {
    written: u64,
    bytes: u64,
    skipped: u64,
    removed: u64,
}

struct Writer {
    path: PathBuf,
    /// `None` after a failed batch: redb refuses writes after a failed
    /// commit until the file is reopened.
    db: Option<Database>,
    requests: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut batch = Batch::default();
            batch.add(first);
            // Whatever queued up during the previous commit joins this one.
            while !batch.full() {
                match self.requests.try_recv() {
                    Ok(request) => batch.add(request),
                    Err(_) => break,
                }
            }
            let result = self.write(&batch);
            if let Err(reason) = &result {
                self.counters.errors.fetch_add(1, Relaxed);
                error!(path = %self.path.display(), %reason, changes = batch.changes.len(),
                    "store: batch not written; its writers get an error and the file is reopened");
                self.db = None;
            }
            for reply in batch.replies {
                let answer = result
                    .clone()
                    .map_err(|reason| StoreError::Write { reason });
                reply(answer);
            }
        }
        debug!(path = %self.path.display(), "store: writer stopped");
    }

    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        if batch.changes.is_empty() && batch.removes.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let tally = panic::catch_unwind(AssertUnwindSafe(|| self.commit(batch)))
            .unwrap_or_else(|_| Err("redb panicked (see stderr)".into()))?;
        let c = &self.counters;
        c.transactions.fetch_add(1, Relaxed);
        c.changes_written.fetch_add(tally.written, Relaxed);
        c.bytes_written.fetch_add(tally.bytes, Relaxed);
        c.skipped_not_newer.fetch_add(tally.skipped, Relaxed);
        c.removed.fetch_add(tally.removed, Relaxed);
        debug!(
            changes = batch.changes.len(),
            removes = batch.removes.len(),
            waiters = batch.replies.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "store: committed"
        );
        Ok(())
    }

    fn commit(&mut self, batch: &Batch) -> Result<Tally, String> {
        if self.db.is_none() {
            let db = open_db(&self.path).map_err(|e| format!("reopening the store: {e}"))?;
            self.db = Some(db);
        }
        let db = self.db.as_ref().expect("opened above");
        let mut txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| e.to_string())?;
        // Why two-phase: see the module docs (and FSYNCS_PER_COMMIT).
        txn.set_two_phase_commit(true);
        let mut tally = Tally::default();
        {
            let mut table = txn.open_table(CHANGES).map_err(|e| e.to_string())?;
            for change in &batch.changes {
                let key = encode_key(change.table, &change.key);
                if stored_ts(&table, &key)?.is_some_and(|ts| ts >= change.ts) {
                    tally.skipped += 1;
                    continue;
                }
                let record = DiskRecord::of(change).encode();
                table
                    .insert(&key[..], &record[..])
                    .map_err(|e| e.to_string())?;
                tally.written += 1;
                tally.bytes += (key.len() + record.len()) as u64;
            }
            // After the writes, so a tombstone's removal also removes any
            // older version queued before it.
            for (t, key, ts) in &batch.removes {
                let key = encode_key(*t, key);
                if stored_ts(&table, &key)?.is_some_and(|stored| stored > *ts) {
                    continue;
                }
                if table.remove(&key[..]).map_err(|e| e.to_string())?.is_some() {
                    tally.removed += 1;
                }
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
        Ok(tally)
    }
}
