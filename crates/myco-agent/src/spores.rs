//! The spore content store and peer-to-peer distribution.
//!
//! Spores live in `DATA_DIR/spores/<hex>.spore`, named by their SHA-256.
//! A file is written under `tmp/`, verified (digest, signature, trusted
//! publisher, safe archive), and only then renamed into place: there is
//! never a partial or unverified file under a digest.
//!
//! A node that needs a spore it does not hold fetches it from a holder (the
//! replicated index names them) in 1 MiB chunks over the authenticated
//! stream transport, resuming a partial download, trying the next holder
//! after a failure, with at most [`FETCH_SLOTS`] fetches at once.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use myco_proto::blob::{BlobMessage, CHUNK};
use myco_spore::{Limits, SporeError, Verified};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::streams::Streams;

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

type Waiter = oneshot::Sender<BlobMessage>;

/// The store, shared by the API and the mesh loop.
pub struct SporeStore {
    dir: PathBuf,
    streams: Streams,
    me: SocketAddr,
    limits: Limits,
    waiting: Mutex<BTreeMap<(String, u64), Waiter>>,
    slots: Semaphore,
    serve: mpsc::Sender<(String, u64, u32, SocketAddr)>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// The hex part of a valid digest.
pub fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(hex)
}

impl SporeStore {
    /// Opens the store under `data_dir/spores`; `me` is this node's mesh address.
    pub fn open(
        data_dir: &Path,
        streams: Streams,
        me: SocketAddr,
    ) -> std::io::Result<Arc<SporeStore>> {
        let dir = data_dir.join("spores");
        std::fs::create_dir_all(dir.join("tmp"))?;
        // Leftover temp files are partial uploads from before a crash.
        for e in std::fs::read_dir(dir.join("tmp"))?.flatten() {
            if e.path().extension().is_some_and(|x| x == "upload") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let (serve, requests) = mpsc::channel(64);
        let store = Arc::new(SporeStore {
            dir,
            streams,
            me,
            limits: Limits::default(),
            waiting: Mutex::new(BTreeMap::new()),
            slots: Semaphore::new(FETCH_SLOTS),
            serve,
            refused: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(serve_chunks(store.clone(), requests));
        Ok(store)
    }

    /// Where a spore lives.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|hex| self.dir.join(format!("{hex}.spore")))
    }

    /// Whether this node holds it.
    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_some_and(|p| p.is_file())
    }

    /// Local spores with their age (time since they were stored).
    pub fn local_spores(&self) -> Vec<(String, Duration)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digest = format!("sha256:{}", name.strip_suffix(".spore")?);
                hex_of(&digest)?;
                let age = e
                    .metadata()
                    .ok()?
                    .modified()
                    .ok()?
                    .elapsed()
                    .unwrap_or_default();
                Some((digest, age))
            })
            .collect()
    }

    /// A fresh temp file path for an upload.
    pub fn upload_path(&self) -> PathBuf {
        let n = u64::from_le_bytes(crate::datadir::random_bytes::<8>());
        self.dir.join("tmp").join(format!("{n:016x}.upload"))
    }

    /// Limits applied to every spore.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a refusal by reason, for `/metrics`.
    pub fn count_refusal(&self, reason: &'static str) {
        *self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
    }

    /// Refusals by reason since start.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Verifies a complete file and moves it into place under its digest.
    /// On refusal the file is deleted and the refusal counted.
    pub async fn ingest(
        &self,
        file: PathBuf,
        trusted: Vec<VerifyingKey>,
    ) -> Result<Verified, SporeError> {
        let limits = self.limits;
        let f = file.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let reader = std::io::BufReader::new(std::fs::File::open(&f)?);
            myco_spore::verify(reader, &trusted, &limits)
        })
        .await
        .unwrap_or_else(|e| Err(SporeError::Io(std::io::Error::other(e))));
        match verified {
            Ok(v) => {
                let dest = self.path(&v.digest).expect("verify yields valid digests");
                std::fs::rename(&file, &dest)?;
                std::fs::File::open(&self.dir).and_then(|d| d.sync_all())?;
                Ok(v)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&file);
                self.count_refusal(e.reason());
                Err(e)
            }
        }
    }

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
        if dest.is_file() {
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
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .append(true)
            .open(part)?;
        let mut offset = file.metadata()?.len();
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
                if self.streams.send(holder, request.encode()).is_err() {
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
                    file.write_all(&data)?;
                    offset += data.len() as u64;
                    if offset == t {
                        file.sync_all()?;
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
                if self
                    .serve
                    .try_send((digest, offset, len.min(CHUNK), reply_to))
                    .is_err()
                {
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

/// Serves chunk requests one at a time: reading a chunk is quick, and one
/// task keeps disk and memory use bounded however many peers ask.
async fn serve_chunks(
    store: Arc<SporeStore>,
    mut requests: mpsc::Receiver<(String, u64, u32, SocketAddr)>,
) {
    while let Some((digest, offset, len, reply_to)) = requests.recv().await {
        let path = store.path(&digest);
        let read =
            tokio::task::spawn_blocking(move || -> std::io::Result<Option<(u64, Vec<u8>)>> {
                let Some(path) = path.filter(|p| p.is_file()) else {
                    return Ok(None);
                };
                let mut f = std::fs::File::open(path)?;
                let total = f.metadata()?.len();
                f.seek(SeekFrom::Start(offset.min(total)))?;
                let mut data = Vec::with_capacity(len as usize);
                f.take(u64::from(len)).read_to_end(&mut data)?;
                Ok(Some((total, data)))
            })
            .await;
        let answer = match read {
            Ok(Ok(Some((total, data)))) => BlobMessage::Data {
                digest,
                offset,
                total,
                data,
            },
            _ => BlobMessage::Missing { digest },
        };
        if store.streams.send(reply_to, answer.encode()).is_err() {
            tracing::debug!(to = %reply_to, "spore chunk not sent: queue full");
        }
    }
}
