//! Fetching a spore this node lacks from the nodes that hold it.
//!
//! 1 MiB chunks over the authenticated stream transport (the blob
//! channel), [`WINDOW`] requests in flight, a partial file resumed on the
//! next attempt, the next holder tried after a failure or [`CHUNK_TIMEOUT`]
//! of silence, and at most [`FETCH_SLOTS`] fetches at once. The fetched
//! file is verified like an upload before it is kept.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use myco_proto::blob::{BlobMessage, CHUNK};
use myco_proto::channel::Channel;
use myco_spore::SporeError;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::serve::ChunkRequest;
use super::store::{SporeStore, hex_of};

/// Fetches running at once; more wait.
pub const FETCH_SLOTS: usize = 2;
/// Chunk requests kept in flight per fetch.
const WINDOW: usize = 4;
/// How long a chunk may take before the next holder is tried.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Who waits for which chunk: (digest, offset) to its fetch.
pub(super) type Waiting = BTreeMap<(String, u64), oneshot::Sender<BlobMessage>>;

impl SporeStore {
    /// Makes sure this node holds `digest`, fetching it from `holders`.
    pub async fn fetch(
        &self,
        digest: &str,
        holders: &[SocketAddr],
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
        // One partial file per digest: a later attempt resumes it.
        let part = self.dir.join("tmp").join(format!("{hex}.part"));
        for holder in holders.iter().filter(|h| **h != self.me) {
            match self.download(digest, *holder, &part).await {
                Ok(()) => {
                    let verified = self.ingest(part.clone(), trusted.clone()).await?;
                    if verified.digest != digest {
                        return Err(FetchError::Unavailable(digest.to_string()));
                    }
                    tracing::info!(%digest, from = %holder, "spore fetched");
                    return Ok(dest);
                }
                Err(e) => {
                    tracing::debug!(%digest, from = %holder, error = %e, "fetch from holder failed")
                }
            }
        }
        Err(FetchError::Unavailable(digest.to_string()))
    }

    /// Downloads the rest of `part` from `holder`, keeping [`WINDOW`] chunk
    /// requests in flight: one connection and one serving task keep the
    /// answers in order, and a window hides the round trip per chunk.
    async fn download(&self, digest: &str, holder: SocketAddr, part: &Path) -> std::io::Result<()> {
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(part)
            .await?;
        let mut offset = file.metadata().await?.len();
        let mut total: Option<u64> = None;
        let mut next = offset;
        let mut inflight = std::collections::VecDeque::new();
        let result = loop {
            // Ask ahead, but never past the end once it is known.
            while inflight.len() < WINDOW && total.is_none_or(|t| next < t) {
                let (tx, rx) = oneshot::channel();
                self.waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((digest.to_string(), next), tx);
                let request = BlobMessage::Request {
                    digest: digest.to_string(),
                    offset: next,
                    len: CHUNK,
                    reply_to: self.me,
                };
                if self
                    .streams
                    .send(holder, Channel::Blob, request.encode())
                    .is_err()
                {
                    break;
                }
                inflight.push_back((next, rx));
                next += u64::from(CHUNK);
            }
            let Some((at, rx)) = inflight.pop_front() else {
                break Err(std::io::Error::other("stream queue full"));
            };
            match tokio::time::timeout(CHUNK_TIMEOUT, rx).await {
                Ok(Ok(BlobMessage::Data {
                    offset: got,
                    total: t,
                    data,
                    ..
                })) if got == at && at == offset => {
                    if t > self.limits.max_spore_bytes || offset + data.len() as u64 > t {
                        break Err(std::io::Error::other(
                            "holder sent more than a spore may hold",
                        ));
                    }
                    total = Some(t);
                    file.write_all(&data).await?;
                    offset += data.len() as u64;
                    if offset == t {
                        file.sync_all().await?;
                        break Ok(());
                    }
                    if data.is_empty() {
                        break Err(std::io::Error::other("holder sent an empty chunk"));
                    }
                }
                Ok(Ok(BlobMessage::Missing { .. })) => {
                    break Err(std::io::Error::other("holder does not have it"));
                }
                Ok(_) => break Err(std::io::Error::other("unexpected answer")),
                Err(_) => break Err(std::io::Error::other("chunk timed out")),
            }
        };
        // Forget the waiters of requests still out.
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        for (at, _) in inflight {
            waiting.remove(&(digest.to_string(), at));
        }
        result
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
                let request = ChunkRequest {
                    digest,
                    offset,
                    len: len.min(CHUNK),
                    reply_to,
                };
                if self.serve.try_send(request).is_err() {
                    tracing::debug!("spore chunk requests queue full; the asker retries");
                }
            }
            BlobMessage::Data {
                ref digest, offset, ..
            } => {
                let waiter = self
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(digest.clone(), offset));
                if let Some(w) = waiter {
                    let _ = w.send(message);
                }
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
                        let _ = w.send(message.clone());
                    }
                }
            }
        }
    }
}
