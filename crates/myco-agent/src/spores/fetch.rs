//! Fetching a spore this node lacks from the nodes that hold it.
//!
//! Over the authenticated stream transport (the blob channel): chunks are
//! asked of every known source at once (see [`super::download`]), written
//! and verified as they land in order (see [`super::receive`]), a partial
//! file resumed on the next attempt, and at most [`FETCH_SLOTS`] fetches at
//! once. While a fetch runs its prefix is served to others that fetch the
//! same spore (a swarm), so a deploy to many nodes does not queue on the
//! first holder. A fetch from several sources that does not verify is
//! tried again from one holder at a time, so one holder with a bad copy
//! cannot stop the others from delivering.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use ed25519_dalek::VerifyingKey;
use myco_proto::blob::{BlobMessage, CHUNK};
use myco_proto::channel::Channel;
use myco_spore::SporeError;
use tokio::sync::mpsc;

use super::chunk::Chunk;
use super::download::{Outcome, Source, Sources};
use super::receive::{Progress, Received, Receiver};
use super::serve::ChunkRequest;
use super::store::{SporeStore, hex_of};

/// Fetches running at once; more wait.
pub const FETCH_SLOTS: usize = 2;

/// Why a spore could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not `sha256:` and 64 hex digits.
    #[error("not a spore digest (want sha256:<64 hex digits>): {0:?}")]
    BadDigest(String),
    /// No holder answered with it.
    #[error(
        "no node holding {0} could send it; check `myco spores` for its holders and that they are alive"
    )]
    Unavailable(String),
    /// It arrived but did not verify.
    #[error("the spore fetched from a peer was refused: {0}")]
    Refused(#[from] SporeError),
    /// Local disk trouble.
    #[error("spore store: {0}")]
    Io(#[from] std::io::Error),
}

/// Who waits for which chunk: (digest, offset) to its fetch's answers.
pub(super) type Waiting = BTreeMap<(String, u64), mpsc::Sender<Answer>>;

/// A source's answer to one chunk request, as its fetch sees it.
#[derive(Debug)]
pub(super) enum Answer {
    /// The chunk at `offset` of a blob of `total` bytes.
    Data {
        /// Where it starts.
        offset: u64,
        /// The blob's size.
        total: u64,
        /// The bytes, in the buffer they arrived in.
        data: Chunk,
    },
    /// The source cannot send the chunk at `offset`.
    Lacking(u64),
    /// The source is serving all it may; ask again shortly.
    Busy(u64),
    /// An older node without the blob (says no offset).
    Missing,
}

impl SporeStore {
    /// Makes sure this node holds `digest`, fetching it from `sources`
    /// (asked again as the fetch goes, since more nodes may start
    /// fetching it and serve what they have).
    pub async fn fetch(
        &self,
        digest: &str,
        sources: Sources<'_>,
        trusted: Vec<VerifyingKey>,
    ) -> Result<PathBuf, FetchError> {
        let hex = hex_of(digest).ok_or_else(|| FetchError::BadDigest(digest.to_string()))?;
        let dest = self.dir.join(format!("{hex}.spore"));
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if self.has(digest).await {
            return Ok(dest);
        }
        let started = std::time::Instant::now();
        let progress = Arc::new(Progress::default());
        self.partial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest.to_string(), progress.clone());
        let result = self.fetch_from(digest, sources, &trusted, &progress).await;
        self.partial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest);
        if result.is_ok() {
            let took = started.elapsed();
            self.fetch_seconds.observe(took.as_secs_f64());
            tracing::info!(%digest, ms = took.as_millis() as u64, "spore fetch done");
        }
        result.map(|()| dest)
    }

    async fn fetch_from(
        &self,
        digest: &str,
        sources: Sources<'_>,
        trusted: &[VerifyingKey],
        progress: &Arc<Progress>,
    ) -> Result<(), FetchError> {
        let mut refused = match self.attempt(digest, sources, trusted, progress).await? {
            None => return Ok(()),
            Some(e) => e,
        };
        // Refused after asking several at once: ask one holder at a time,
        // so a bad copy is found out and the good ones still deliver.
        let holders: Vec<Source> = sources().into_iter().filter(|s| s.complete).collect();
        for holder in holders.into_iter().filter(|h| h.addr != self.me) {
            let one = move || vec![holder];
            match self.attempt(digest, &one, trusted, progress).await {
                Ok(None) => return Ok(()),
                Ok(Some(e)) => refused = e,
                Err(FetchError::Unavailable(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(FetchError::Refused(refused))
    }

    /// One download: `Ok(None)` when kept, `Ok(Some(why))` when the bytes
    /// were refused (the partial file is gone), `Unavailable` when no
    /// source could send the rest (the partial file stays, to resume).
    async fn attempt(
        &self,
        digest: &str,
        sources: Sources<'_>,
        trusted: &[VerifyingKey],
        progress: &Arc<Progress>,
    ) -> Result<Option<SporeError>, FetchError> {
        let hex = hex_of(digest).ok_or_else(|| FetchError::BadDigest(digest.to_string()))?;
        // One partial file per digest: a later attempt resumes it.
        let part = self.part_path(hex);
        let mut rx = Receiver::start(part, trusted.to_vec(), self.limits, progress.clone())?;
        let outcome = self.download(digest, sources, &mut rx).await;
        let complete = matches!(outcome, Outcome::Complete);
        match rx.finish(complete, &self.dir).await {
            Received::Kept(v) if v.digest == digest => {
                tracing::info!(%digest, size = v.size, "spore fetched and verified");
                Ok(None)
            }
            Received::Kept(v) => {
                // A valid spore, kept under its own digest, but not this one.
                tracing::warn!(%digest, got = %v.digest, "sources sent another spore");
                Err(FetchError::Unavailable(digest.to_string()))
            }
            Received::Refused(e) => {
                self.count_refusal(e.reason());
                tracing::warn!(%digest, error = %e, "fetched spore refused");
                Ok(Some(e))
            }
            Received::Incomplete => {
                if let Outcome::Stalled(why) = outcome {
                    tracing::debug!(%digest, why, "fetch stalled");
                }
                Err(FetchError::Unavailable(digest.to_string()))
            }
        }
    }

    /// Where the partial file of a fetch lives.
    pub(super) fn part_path(&self, hex: &str) -> PathBuf {
        self.dir.join("tmp").join(format!("{hex}.part"))
    }

    /// Handles the bytes of a blob message as they come off a stream
    /// connection (on its reader's task, see `Streams::handle_directly`):
    /// a chunk goes to its fetch in the buffer it arrived in.
    pub fn on_bytes(&self, bytes: Vec<u8>) {
        if let Some((head, at)) = BlobMessage::data_at(&bytes) {
            let (offset, total) = (head.offset, head.total);
            let key = (head.digest.to_string(), offset);
            let data = Chunk::within(bytes, at);
            self.answered(
                key,
                Answer::Data {
                    offset,
                    total,
                    data,
                },
            );
            return;
        }
        match BlobMessage::decode(&bytes) {
            Some(message) => self.on_message(message),
            None => {
                self.bad_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(len = bytes.len(), "undecodable blob message dropped");
            }
        }
    }

    /// Hands an answer to the fetch waiting for it, if any.
    fn answered(&self, key: (String, u64), answer: Answer) {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        // The fetch's queue holds one answer per request it has out, so
        // this only fails once it gave up on the request.
        if let Some(w) = waiter {
            let _ = w.try_send(answer);
        }
    }

    /// Handles a blob message that arrived on the stream transport.
    pub fn on_message(&self, message: BlobMessage) {
        match message {
            BlobMessage::Request {
                digest,
                offset,
                len,
                reply_to,
            } => {
                // A bad digest cannot be served: say so now (and keep the
                // queue's entries small and fixed in size).
                if hex_of(&digest).is_none() {
                    let lacking = BlobMessage::Lacking { digest, offset };
                    let _ = self.streams.send(reply_to, Channel::Blob, lacking.encode());
                    return;
                }
                let request = ChunkRequest {
                    digest,
                    offset,
                    len: len.min(CHUNK),
                    reply_to,
                };
                if let Err(full) = self.serve.try_send(request) {
                    // Never left unanswered: the asker pauses this source
                    // and asks again, instead of waiting out a timeout.
                    let r = full.into_inner();
                    self.busy_answers.fetch_add(1, Ordering::Relaxed);
                    let busy = BlobMessage::Busy {
                        digest: r.digest,
                        offset: r.offset,
                    };
                    if self
                        .streams
                        .send(r.reply_to, Channel::Blob, busy.encode())
                        .is_err()
                    {
                        tracing::debug!(to = %r.reply_to, "spore serve queue full and no room to say so");
                    }
                }
            }
            BlobMessage::Data {
                digest,
                offset,
                total,
                data,
            } => {
                let data = Chunk::from(data);
                self.answered(
                    (digest, offset),
                    Answer::Data {
                        offset,
                        total,
                        data,
                    },
                );
            }
            BlobMessage::Lacking { digest, offset } => {
                self.answered((digest, offset), Answer::Lacking(offset));
            }
            BlobMessage::Busy { digest, offset } => {
                self.answered((digest, offset), Answer::Busy(offset));
            }
            BlobMessage::Missing { ref digest } => {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let keys: Vec<_> = waiting
                    .keys()
                    .filter(|(d, _)| d == digest)
                    .cloned()
                    .collect();
                for k in keys {
                    if let Some(w) = waiting.remove(&k) {
                        let _ = w.try_send(Answer::Missing);
                    }
                }
            }
        }
    }
}
