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

/// Chunk requests waiting to be served; more are dropped (the asker
/// retries after its timeout), so a burst of peers costs bounded memory.
pub(super) const SERVE_QUEUE: usize = 64;
/// Chunks read and sent at once: enough to keep the disk, the encoding
/// and several peers' connections busy together, and a bound on the
/// memory serving takes (this many chunks).
pub(super) const SERVE_CONCURRENCY: usize = 4;
/// How long a chunk waits for room in a full queue to its asker before it
/// is dropped (the asker then asks again elsewhere).
const ROOM_WAIT: Duration = Duration::from_secs(2);

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
        let permit = busy
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let store = store.clone();
        tokio::spawn(async move {
            let to = request.reply_to;
            let answer = answer(&store, request).await;
            send(&store, to, answer.encode()).await;
            drop(permit);
        });
    }
}

/// Reads the chunk: from the whole file, or from the partial file of a
/// fetch that already has it; `Lacking` otherwise.
async fn answer(store: &SporeStore, r: ChunkRequest) -> BlobMessage {
    let lacking = |digest: String| BlobMessage::Lacking {
        digest,
        offset: r.offset,
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
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, Vec<u8>)> {
        let f = std::fs::File::open(path)?;
        let total = match limit {
            Some((_, total)) => total,
            None => f.metadata()?.len(),
        };
        let want = total.saturating_sub(offset).min(len) as usize;
        let mut data = vec![0; want];
        f.read_exact_at(&mut data, offset)?;
        Ok((total, data))
    })
    .await;
    match read {
        Ok(Ok((total, data))) => BlobMessage::Data {
            digest: r.digest,
            offset,
            total,
            data,
        },
        _ => lacking(r.digest),
    }
}

/// Sends, waiting a little for room when the queue to the asker is full:
/// the asker keeps a bounded window, so room comes as the connection drains.
async fn send(store: &SporeStore, to: SocketAddr, message: Vec<u8>) {
    let deadline = tokio::time::Instant::now() + ROOM_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        match store.streams.send(to, Channel::Blob, message.clone()) {
            Ok(()) => return,
            Err(crate::net::streams::SendError::QueueFull { .. })
                if tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => {
                tracing::debug!(%to, error = %e, "spore chunk not sent");
                return;
            }
        }
    }
}
