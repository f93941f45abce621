//! Writing a fetched spore as it arrives, verified in the same pass.
//!
//! A [`Receiver`] runs [`myco_spore::verify`] on the blocking pool over a
//! reader that first replays the partial file of an earlier attempt and
//! then takes the in-order bytes the fetch feeds it, appending each to the
//! partial file as it is read. So the digest, the signature and the
//! archive are checked once, while the download runs, and the file is read
//! from disk never (only a resumed prefix is). The partial file is always
//! a prefix of the spore: it is what a node serves while still fetching.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::VerifyingKey;
use myco_spore::{Limits, SporeError, Verified};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::chunk::Chunk;

/// In-order chunks queued for the verifier: a bound on what waits for a
/// slow disk or hash, after which the fetch stops reading answers.
const FEED: usize = 8;

/// How far a fetch has come, read by the serving side to hand out the
/// prefix it already has.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Bytes in the partial file (all of them in order from 0).
    pub(super) written: AtomicU64,
    /// The spore's size, 0 until a source said.
    pub(super) total: AtomicU64,
}

/// How a receive ended.
pub(super) enum Received {
    /// Verified and renamed into place.
    Kept(Box<Verified>),
    /// Refused: the partial file is deleted, nothing of it can be trusted.
    Refused(SporeError),
    /// Stopped before the end: the partial file keeps the prefix received.
    Incomplete,
}

/// A spore being received into `part`.
pub(super) struct Receiver {
    feed: Option<mpsc::Sender<Chunk>>,
    task: JoinHandle<Result<Verified, SporeError>>,
    progress: Arc<Progress>,
    part: PathBuf,
    /// The verifier stopped taking bytes: it has a verdict.
    stopped: bool,
}

impl Receiver {
    /// Starts verifying `part` (created if absent): its bytes first, then
    /// whatever [`Receiver::feed`] gives. `progress` counts the bytes in
    /// the partial file, for serving them to others meanwhile.
    pub(super) fn start(
        part: PathBuf,
        trusted: Vec<VerifyingKey>,
        limits: Limits,
        progress: Arc<Progress>,
    ) -> std::io::Result<Receiver> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)?;
        let prefix = File::open(&part)?;
        progress
            .written
            .store(out.metadata()?.len(), Ordering::Release);
        let (feed, rx) = mpsc::channel(FEED);
        let tee = Tee {
            prefix: Some(BufReader::with_capacity(1 << 20, prefix)),
            rx,
            out,
            cur: Chunk::default(),
            pos: 0,
            progress: progress.clone(),
        };
        let task = tokio::task::spawn_blocking(move || {
            let mut tee = tee;
            let verified = myco_spore::verify(&mut tee, &trusted, &limits)?;
            tee.out.sync_all()?;
            Ok(verified)
        });
        Ok(Receiver {
            feed: Some(feed),
            task,
            progress,
            part,
            stopped: false,
        })
    }

    /// Bytes in the partial file so far.
    pub(super) fn len(&self) -> u64 {
        self.progress.written.load(Ordering::Acquire)
    }

    /// Records the spore's full size once a source told it.
    pub(super) fn set_total(&self, total: u64) {
        self.progress.total.store(total, Ordering::Release);
    }

    /// Hands over the next in-order bytes. `false` if verification has
    /// already stopped (the spore was refused): see [`Receiver::finish`].
    pub(super) async fn feed(&mut self, data: impl Into<Chunk>) -> bool {
        let taken = match &self.feed {
            Some(f) => f.send(data.into()).await.is_ok(),
            None => false,
        };
        self.stopped |= !taken;
        taken
    }

    /// Ends the receive. `complete` says whether every byte was fed; if
    /// so, or if the verifier stopped early, the verdict decides, and a
    /// verified file moves into `dir` under its digest. Otherwise the prefix is kept for the
    /// next attempt (which replays it through the verifier first).
    pub(super) async fn finish(mut self, complete: bool, dir: &Path) -> Received {
        drop(self.feed.take());
        let judged = complete || self.stopped;
        let verdict = self
            .task
            .await
            .unwrap_or_else(|e| Err(SporeError::Io(std::io::Error::other(e))));
        let part = self.part;
        match verdict {
            _ if !judged => Received::Incomplete,
            Ok(v) => {
                let hex = super::store::hex_of(&v.digest).expect("verify yields valid digests");
                let dest = dir.join(format!("{hex}.spore"));
                let moved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    std::fs::rename(&part, &dest)?;
                    // The rename is durable only once the directory is.
                    if let Some(dir) = dest.parent() {
                        File::open(dir)?.sync_all()?;
                    }
                    Ok(())
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match moved {
                    Ok(()) => Received::Kept(Box::new(v)),
                    Err(e) => Received::Refused(SporeError::Io(e)),
                }
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Received::Refused(e)
            }
        }
    }
}

/// Replays the partial file, then reads fed chunks, appending each to it.
struct Tee {
    prefix: Option<BufReader<File>>,
    rx: mpsc::Receiver<Chunk>,
    out: File,
    cur: Chunk,
    pos: usize,
    progress: Arc<Progress>,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(prefix) = &mut self.prefix {
            match prefix.read(buf)? {
                0 => self.prefix = None,
                n => return Ok(n),
            }
        }
        while self.pos == self.cur.len() {
            let Some(next) = self.rx.blocking_recv() else {
                return Ok(0);
            };
            self.out.write_all(&next)?;
            self.progress
                .written
                .fetch_add(next.len() as u64, Ordering::AcqRel);
            self.cur = next;
            self.pos = 0;
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::inorder::InOrder;
    use super::*;

    /// A signed spore of a few hundred KB, its publisher key and a scratch dir.
    fn spore() -> (Vec<u8>, String, VerifyingKey, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "myco-receive-{}",
            hex::encode(crate::config::datadir::random_bytes::<6>())
        ));
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let mut x = 7u64;
        let blob: Vec<u8> = (0..300_000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect();
        std::fs::write(src.join("run"), &blob).unwrap();
        let key = myco_spore::SigningKey::from_bytes(&[9; 32]);
        let meta = myco_spore::PackMeta {
            name: "r".into(),
            version: "1".into(),
            command: "./run".into(),
            args: vec![],
            env: Default::default(),
            resources: Default::default(),
            health: None,
            created_at: 1,
            microvm: None,
        };
        let mut bytes = Vec::new();
        let info = myco_spore::pack(&src, meta, &key, &mut bytes).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        (bytes, info.digest, key.verifying_key(), dir)
    }

    /// Feeds `bytes` in chunks of `size`, in the order `order` gives
    /// their indices, through [`InOrder`] into a receiver.
    async fn receive(
        bytes: &[u8],
        size: usize,
        order: &[usize],
        dir: &Path,
        key: VerifyingKey,
    ) -> Received {
        let part = dir.join("tmp/x.part");
        let progress = Arc::new(Progress::default());
        let mut rx = Receiver::start(part, vec![key], Limits::default(), progress).unwrap();
        let mut io = InOrder::new(0);
        for &i in order {
            let at = i * size;
            let chunk = bytes[at..(at + size).min(bytes.len())].to_vec();
            for run in io.push(at as u64, chunk).unwrap() {
                if !rx.feed(run).await {
                    return rx.finish(false, dir).await;
                }
            }
        }
        rx.finish(io.next() == bytes.len() as u64, dir).await
    }

    #[tokio::test]
    async fn chunks_in_any_order_verify_as_they_land() {
        let (bytes, digest, key, dir) = spore();
        let size = 64 * 1024;
        let n = bytes.len().div_ceil(size);
        let order: Vec<usize> = (0..n).rev().collect();
        match receive(&bytes, size, &order, &dir, key).await {
            Received::Kept(v) => assert_eq!(v.digest, digest),
            Received::Refused(e) => panic!("refused: {e}"),
            Received::Incomplete => panic!("incomplete"),
        }
        let hex = digest.strip_prefix("sha256:").unwrap();
        let kept = std::fs::read(dir.join(format!("{hex}.spore"))).unwrap();
        assert!(kept == bytes, "the kept file differs");
        assert!(!dir.join("tmp/x.part").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_flipped_byte_is_refused_and_its_partial_file_deleted() {
        let (mut bytes, _, key, dir) = spore();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        let n = bytes.len().div_ceil(50_000);
        let order: Vec<usize> = (0..n).collect();
        match receive(&bytes, 50_000, &order, &dir, key).await {
            Received::Refused(e) => assert_eq!(e.reason(), "payload_digest_mismatch"),
            _ => panic!("a corrupt spore was not refused"),
        }
        assert!(!dir.join("tmp/x.part").exists(), "the bad bytes were kept");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_receive_cut_short_keeps_its_prefix_and_the_next_resumes_it() {
        let (bytes, digest, key, dir) = spore();
        let size = 100_000;
        let first = match receive(&bytes, size, &[1, 0], &dir, key).await {
            Received::Incomplete => std::fs::read(dir.join("tmp/x.part")).unwrap(),
            _ => panic!("a cut-short receive was judged"),
        };
        assert!(first[..] == bytes[..2 * size], "the prefix kept differs");
        // The rest only: the receiver replays the prefix first.
        let part = dir.join("tmp/x.part");
        let progress = Arc::new(Progress::default());
        let mut rx = Receiver::start(part, vec![key], Limits::default(), progress).unwrap();
        assert_eq!(rx.len(), 2 * size as u64);
        assert!(rx.feed(bytes[2 * size..].to_vec()).await);
        match rx.finish(true, &dir).await {
            Received::Kept(v) => assert_eq!(v.digest, digest),
            _ => panic!("the resumed receive did not verify"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
