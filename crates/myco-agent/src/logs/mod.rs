//! Instance logs across the mesh: a node reads the logs of an instance
//! that runs elsewhere by asking its node over the stream transport
//! ([`myco_proto::logs::LogMessage`] on the jobs channel).
//!
//! - [`reader`]: the lines of one instance's files, tail then follow,
//!   formatted as `/v1/logs` shows them; used for local instances and by
//!   the serving side alike.
//! - [`serve`]: answers another node's request from this node's files,
//!   with at most [`myco_proto::logs::WINDOW`] chunks unacknowledged and
//!   bounded concurrency (the `/v1/logs` followers' semaphore for follows,
//!   [`TAIL_SLOTS`] for one-shot tails).
//! - [`ask`]: sends a request and turns the answer into a channel of
//!   [`Piece`]s for the HTTP handler.
//!
//! Messages arrive from the mesh loop through [`RemoteLogs::on_message`],
//! which never blocks: a message with no one waiting, or one for an asker
//! whose queue is full, is counted and dropped (the asker then sees a gap
//! in the numbering and says the stream was interrupted).

mod ask;
pub mod reader;
mod serve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use myco_proto::logs::{LogMessage, LogRefusal};
use tokio::sync::{Semaphore, mpsc, watch};

pub use ask::Piece;

use crate::http::logs::Followers;
use crate::net::streams::Streams;

/// One-shot tail requests from other nodes served at once; more are
/// refused as busy.
pub const TAIL_SLOTS: usize = 8;
/// Open requests from other nodes queued for the dispatcher; more are
/// refused as busy.
const OPEN_QUEUE: usize = 64;

/// Both sides of remote log reading on this node.
pub struct RemoteLogs {
    streams: Streams,
    /// This node's mesh (stream) address: where answers come back.
    me: SocketAddr,
    data_dir: PathBuf,
    followers: Followers,
    tails: Arc<Semaphore>,
    next_request: AtomicU64,
    /// Requests this node asked, by id: where their messages go.
    asks: Mutex<HashMap<u64, mpsc::Sender<LogMessage>>>,
    /// Requests this node serves, by (asker, id): the asker's last ack.
    serving: Mutex<HashMap<(SocketAddr, u64), watch::Sender<u64>>>,
    opens: mpsc::Sender<LogMessage>,
    dropped: AtomicU64,
    /// Serving tasks running (they hold their slot until they end).
    active: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for RemoteLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLogs").field("me", &self.me).finish()
    }
}

impl RemoteLogs {
    /// Starts the dispatcher of incoming requests on the current runtime.
    pub fn start(
        streams: Streams,
        me: SocketAddr,
        data_dir: PathBuf,
        followers: Followers,
    ) -> Arc<RemoteLogs> {
        let (opens, rx) = mpsc::channel(OPEN_QUEUE);
        let seed = u64::from_le_bytes(crate::config::datadir::random_bytes::<8>());
        let logs = Arc::new(RemoteLogs {
            streams,
            me,
            data_dir,
            followers,
            tails: Arc::new(Semaphore::new(TAIL_SLOTS)),
            // Random start: ids of a restarted agent do not meet the old ones.
            next_request: AtomicU64::new(seed >> 1),
            asks: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            opens,
            dropped: AtomicU64::new(0),
            active: std::sync::atomic::AtomicUsize::new(0),
        });
        tokio::spawn(serve::dispatch(logs.clone(), rx));
        logs
    }

    /// This node's stream address (where answers to its requests go).
    pub fn addr(&self) -> SocketAddr {
        self.me
    }

    /// Requests from other nodes being served now.
    pub fn serving(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Log messages dropped: undecodable, unexpected or unwanted.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a message that could not be used.
    pub fn drop_one(&self, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(why, "log message dropped");
    }

    /// Handles a jobs-channel message from the mesh loop; never blocks.
    pub fn on_bytes(&self, bytes: &[u8]) {
        match LogMessage::decode(bytes) {
            Some(m) => self.on_message(m),
            None => self.drop_one("undecodable"),
        }
    }

    /// Routes a decoded message to the request it belongs to.
    pub fn on_message(&self, message: LogMessage) {
        match message {
            LogMessage::Open { .. } => {
                if let Err(mpsc::error::TrySendError::Full(LogMessage::Open {
                    request,
                    reply_to,
                    ..
                })) = self.opens.try_send(message)
                {
                    self.send(
                        reply_to,
                        LogMessage::End {
                            request,
                            chunks: 0,
                            refused: Some(LogRefusal::Busy),
                        },
                    );
                }
            }
            LogMessage::Chunk { request, .. } | LogMessage::End { request, .. } => {
                let asks = self.asks.lock().unwrap_or_else(PoisonError::into_inner);
                match asks.get(&request) {
                    Some(tx) if tx.try_send(message).is_ok() => {}
                    _ => self.drop_one("no asker waiting, or its queue is full"),
                }
            }
            LogMessage::Ack {
                request,
                next,
                from,
            } => {
                let serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
                match serving.get(&(from, request)) {
                    Some(ack) => {
                        // Sent even when unchanged: a repeat is a keepalive.
                        ack.send_replace(next);
                    }
                    None => self.drop_one("ack for no request served"),
                }
            }
            LogMessage::Close { request, from } => {
                // Dropping the sender tells the serving task to stop.
                self.serving
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(from, request));
            }
        }
    }

    /// Queues a message for `to`; a full queue is the caller's to handle.
    fn send(&self, to: SocketAddr, message: LogMessage) -> bool {
        self.streams
            .send(to, myco_proto::channel::Channel::Jobs, message.encode())
            .is_ok()
    }
}
