//! Serving chunks of local spores to peers that fetch them: whole files,
//! and the verified-so-far prefix of a spore this node is still fetching
//! (so fetchers of the same spore feed each other).

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use myco_proto::blob::BlobMessage;
use myco_proto::channel::Channel;
use tokio::sync::{Semaphore, mpsc};

use super::store::{SporeStore, hex_of};

/// Chunk requests waiting to be served. A request past this is answered
/// `Busy` at once (never dropped unanswered), and the asker pauses that
/// source briefly. Requests are small and fixed in size (the digest is
/// checked before queueing: about 150 bytes each), so the queue's bytes
/// are bounded by its count: 1024 of them are about 150 KiB.
/// `MYCO_SPORE_SERVE_QUEUE` overrides it (tests use a tiny one).
pub(super) const SERVE_QUEUE: usize = 1024;
/// Chunks read and sent at once: enough to keep the disk, the encoding
/// and several peers' connections busy together, and a bound on the
/// memory serving takes (this many chunks).
pub(super) const SERVE_CONCURRENCY: usize = 4;
/// Bytes waiting in the stream transport's outbound queues (to every peer)
/// past which a request is answered `Busy` instead of read: what a holder
/// serving many fetchers at once holds is this plus the chunks being read,
/// whatever the number of askers.
pub(super) const SERVE_BYTES: usize = 24 << 20;
/// How long a chunk waits for room in a full queue to its asker before it
/// is given up (the asker is then told `Busy` and asks again).
const ROOM_WAIT: Duration = Duration::from_secs(2);

/// The serve queue's length: `MYCO_SPORE_SERVE_QUEUE` if set to a whole
/// number from 1, else [`SERVE_QUEUE`].
pub(super) fn serve_queue_len() -> usize {
    std::env::var("MYCO_SPORE_SERVE_QUEUE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(SERVE_QUEUE)
}

/// A peer asks for `len` bytes of `digest` from `offset`.
pub(super) struct ChunkRequest {
    pub(super) digest: String,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) reply_to: SocketAddr,
}

/// Serves chunk requests, [`SERVE_CONCURRENCY`] at a time, in the order
/// they came.
pub(super) async fn serve_chunks(
    store: Arc<SporeStore>,
    mut requests: mpsc::Receiver<ChunkRequest>,
) {
    let busy = Arc::new(Semaphore::new(SERVE_CONCURRENCY));
    while let Some(request) = requests.recv().await {
        // Enough already waits to be written: say so rather than hold more.
        if store.streams.queued_bytes() >= SERVE_BYTES {
            store.busy_answers.fetch_add(1, Ordering::Relaxed);
            let busy = BlobMessage::Busy {
                digest: request.digest,
                offset: request.offset,
            };
            send(&store, request.reply_to, busy.encode()).await;
            continue;
        }
        let permit = busy
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let store = store.clone();
        tokio::spawn(async move {
            let (to, digest, offset) = (request.reply_to, request.digest.clone(), request.offset);
            let answer = answer(&store, request).await;
            if !send(&store, to, answer).await {
                // No room to the asker: a short answer, so it asks again
                // instead of waiting out its timeout.
                let busy = BlobMessage::Busy { digest, offset };
                let _ = store.streams.send(to, Channel::Blob, busy.encode());
            }
            drop(permit);
        });
    }
}

/// Reads the chunk, encoded as its answer: from the whole file, or from
/// the partial file of a fetch that already has it; `Lacking` otherwise.
async fn answer(store: &SporeStore, r: ChunkRequest) -> Vec<u8> {
    let lacking = |digest: String| {
        let offset = r.offset;
        BlobMessage::Lacking { digest, offset }.encode()
    };
    let Some(hex) = hex_of(&r.digest).map(str::to_string) else {
        return lacking(r.digest);
    };
    let whole = store.dir.join(format!("{hex}.spore"));
    // A fetch in progress: only what is already in the partial file.
    let partial = store
        .partial
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&r.digest)
        .map(|p| {
            (
                p.written.load(Ordering::Acquire),
                p.total.load(Ordering::Acquire),
            )
        });
    let (path, limit): (PathBuf, Option<(u64, u64)>) = match partial {
        Some((written, total)) if total > 0 => (store.part_path(&hex), Some((written, total))),
        Some(_) => return lacking(r.digest),
        None => (whole, None),
    };
    let (offset, len) = (r.offset, u64::from(r.len));
    if let Some((written, total)) = limit
        && offset.saturating_add(len).min(total) > written
    {
        return lacking(r.digest);
    }
    let digest = r.digest.clone();
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let f = std::fs::File::open(path)?;
        let total = match limit {
            Some((_, total)) => total,
            None => f.metadata()?.len(),
        };
        let want = total.saturating_sub(offset).min(len) as usize;
        // The message's head, then the chunk read in place after it: the
        // encoded answer without copying the chunk again.
        // (`vec!` of zeros, not `resize`: it takes fresh zeroed pages, where
        // `resize` wrote the zeros one by one at this profile's opt-level,
        // 7 % of a fetch's samples.)
        let head = BlobMessage::data_head(&digest, offset, total, want);
        let mut message = vec![0; head.len() + want];
        message[..head.len()].copy_from_slice(&head);
        f.read_exact_at(&mut message[head.len()..], offset)?;
        Ok(message)
    })
    .await;
    match read {
        Ok(Ok(message)) => message,
        _ => lacking(r.digest),
    }
}

/// Sends, waiting a little for room when the queue to the asker is full:
/// the asker keeps a bounded window, so room comes as the connection drains.
/// `false` if it could not be queued.
async fn send(store: &SporeStore, to: SocketAddr, mut message: Vec<u8>) -> bool {
    let deadline = tokio::time::Instant::now() + ROOM_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match store.streams.send_or_return(to, Channel::Blob, message) {
            Ok(()) => return true,
            Err((crate::net::streams::SendError::QueueFull { .. }, back))
                if tokio::time::Instant::now() + pause < deadline =>
            {
                message = back;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err((e, _)) => {
                tracing::debug!(%to, error = %e, "spore chunk not sent");
                return false;
            }
        }
    }
}
