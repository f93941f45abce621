//! Serving chunks of local spores to peers that fetch them.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::Arc;

use myco_proto::blob::BlobMessage;
use myco_proto::channel::Channel;
use tokio::sync::mpsc;

use super::store::SporeStore;

/// Chunk requests waiting to be served; more are dropped (the asker
/// retries after its timeout), so a burst of peers costs bounded memory.
pub(super) const SERVE_QUEUE: usize = 64;

/// A peer asks for `len` bytes of `digest` from `offset`.
pub(super) struct ChunkRequest {
    pub(super) digest: String,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) reply_to: SocketAddr,
}

/// Serves chunk requests one at a time: reading a chunk is quick, and one
/// task keeps disk and memory use bounded however many peers ask.
pub(super) async fn serve_chunks(
    store: Arc<SporeStore>,
    mut requests: mpsc::Receiver<ChunkRequest>,
) {
    while let Some(ChunkRequest {
        digest,
        offset,
        len,
        reply_to,
    }) = requests.recv().await
    {
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
        if store
            .streams
            .send(reply_to, Channel::Blob, answer.encode())
            .is_err()
        {
            tracing::debug!(to = %reply_to, "spore chunk not sent: queue full");
        }
    }
}
