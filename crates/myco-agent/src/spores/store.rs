//! The spore content store on disk.
//!
//! Spores live in `DATA_DIR/spores/<hex>.spore`, named by their SHA-256.
//! A file is written under `tmp/`, verified (digest, signature, trusted
//! publisher, safe archive), and only then renamed into place: there is
//! never a partial or unverified file under a digest. Every file operation
//! runs on tokio's blocking pool (`tokio::fs` or `spawn_blocking`), never on
//! the async workers that serve the API and the mesh.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use myco_spore::{Limits, SporeError, Verified};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Semaphore, mpsc};

use super::fetch::{FETCH_SLOTS, Waiting};
use super::receive::Progress;
use super::serve::{ChunkRequest, serve_chunks, serve_queue_len};
use crate::net::streams::Streams;

/// The store, shared by the spore workflow and the mesh loop (which hands
/// it blob messages).
pub struct SporeStore {
    pub(super) dir: PathBuf,
    pub(super) streams: Streams,
    pub(super) me: SocketAddr,
    pub(super) limits: Limits,
    /// Chunk answers awaited by fetches, by digest and offset.
    pub(super) waiting: Mutex<Waiting>,
    pub(super) slots: Semaphore,
    pub(super) serve: mpsc::Sender<ChunkRequest>,
    /// Fetches in progress by digest, whose prefix is served meanwhile.
    pub(super) partial: Mutex<BTreeMap<String, Arc<Progress>>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Chunk requests answered `Busy` (serve queue or byte budget full).
    pub(super) busy_answers: AtomicU64,
    /// Seconds each successful fetch from peers took (slot taken to file
    /// verified and in place): the node-to-node figure, apart from any
    /// HTTP download that asked for it.
    pub(super) fetch_seconds: Histogram,
    /// Blob messages that did not decode (dropped).
    pub(super) bad_messages: AtomicU64,
}

/// Buckets of [`SporeStore::fetch_histogram`], in seconds.
const FETCH_BUCKETS: [f64; 10] = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];

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
    /// Opens the store under `data_dir/spores`; `me` is this node's mesh
    /// address. Starts the task that serves chunks to peers.
    pub async fn open(
        data_dir: &Path,
        streams: Streams,
        me: SocketAddr,
    ) -> std::io::Result<Arc<SporeStore>> {
        let dir = data_dir.join("spores");
        let tmp = dir.join("tmp");
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&tmp)?;
            // Leftover temp files are partial uploads from before a crash.
            for e in std::fs::read_dir(&tmp)?.flatten() {
                if e.path().extension().is_some_and(|x| x == "upload") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        let (serve, requests) = mpsc::channel(serve_queue_len());
        let store = Arc::new(SporeStore {
            dir,
            streams,
            me,
            limits: Limits::default(),
            waiting: Mutex::new(BTreeMap::new()),
            slots: Semaphore::new(FETCH_SLOTS),
            serve,
            partial: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            busy_answers: AtomicU64::new(0),
            fetch_seconds: Histogram::new(FETCH_BUCKETS),
            bad_messages: AtomicU64::new(0),
        });
        tokio::spawn(serve_chunks(store.clone(), requests));
        // Blob messages are handled on the connection readers' tasks, not
        // routed through the mesh loop: a chunk then reaches its fetch
        // without a hop through that thread (which decoded and routed
        // every chunk, about a tenth of a fetch's CPU) and without a copy.
        // Like cache and messaging, they bypass the mesh loop's fault
        // injection (`/v1/debug/faults` blocks gossip and state sync).
        let weak = Arc::downgrade(&store);
        store.streams.handle_directly(
            myco_proto::channel::Channel::Blob,
            Arc::new(move |bytes, _| {
                if let Some(store) = weak.upgrade() {
                    store.on_bytes(bytes);
                }
            }),
        );
        Ok(store)
    }

    /// Where a spore lives.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        hex_of(digest).map(|hex| self.dir.join(format!("{hex}.spore")))
    }

    /// Whether this node holds it.
    pub async fn has(&self, digest: &str) -> bool {
        match self.path(digest) {
            Some(p) => tokio::fs::metadata(p).await.is_ok_and(|m| m.is_file()),
            None => false,
        }
    }

    /// Local spores with their age (time since they were stored).
    pub async fn local_spores(&self) -> Vec<(String, Duration)> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || local_spores_in(&dir))
            .await
            .unwrap_or_default()
    }

    /// A fresh temp file path for an upload.
    pub fn upload_path(&self) -> PathBuf {
        let n = u64::from_le_bytes(crate::config::datadir::random_bytes::<8>());
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

    /// Chunk requests answered `Busy` since start (serving was full).
    pub fn busy_answers(&self) -> u64 {
        self.busy_answers.load(Ordering::Relaxed)
    }

    /// Blob messages dropped because they did not decode.
    pub fn bad_messages(&self) -> u64 {
        self.bad_messages.load(Ordering::Relaxed)
    }

    /// Durations of the fetches from peers since start (a handle on the
    /// same histogram, for `/metrics`).
    pub fn fetch_histogram(&self) -> Histogram {
        self.fetch_seconds.clone()
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
        let dir = self.dir.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let verified = std::fs::File::open(&file)
                .map_err(SporeError::Io)
                .and_then(|f| myco_spore::verify(std::io::BufReader::new(f), &trusted, &limits));
            match verified {
                Ok(v) => {
                    let hex = hex_of(&v.digest).expect("verify yields valid digests");
                    std::fs::rename(&file, dir.join(format!("{hex}.spore")))?;
                    // The rename is durable only once the directory is.
                    std::fs::File::open(&dir).and_then(|d| d.sync_all())?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    Err(e)
                }
            }
        })
        .await
        .unwrap_or_else(|e| Err(SporeError::Io(std::io::Error::other(e))));
        if let Err(e) = &verified {
            self.count_refusal(e.reason());
        }
        verified
    }

    /// Deletes a local spore (garbage collection).
    pub async fn remove(&self, digest: &str) -> std::io::Result<()> {
        match self.path(digest) {
            Some(p) => tokio::fs::remove_file(p).await,
            None => Ok(()),
        }
    }
}

fn local_spores_in(dir: &Path) -> Vec<(String, Duration)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
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
