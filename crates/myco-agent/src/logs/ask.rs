//! Asking the node that runs an instance for its logs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use myco_proto::logs::{ABANDON_SECS, KEEPALIVE_SECS, LogMessage, LogRefusal, WINDOW};
use tokio::sync::mpsc;

use super::RemoteLogs;

/// Pieces of an answer queued for the HTTP handler.
const PIECES: usize = 4;

/// What an answer brings, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Lines (the first piece may be empty: the node answered, with no
    /// lines yet).
    Text(String),
    /// The node refused.
    Refused(LogRefusal),
    /// The answer broke off (gap, silence, full queue): the reason.
    Lost(String),
}

/// Forgets the request when its task ends, however it ends.
struct Registered(Arc<RemoteLogs>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0
            .asks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.1);
    }
}

impl RemoteLogs {
    /// Asks the node whose stream address is `to` for the logs of
    /// `instance` of `job`. The answer comes as pieces on the returned
    /// channel, which closes after the last; dropping it tells the node to
    /// stop.
    pub fn ask(
        self: &Arc<Self>,
        to: SocketAddr,
        job: &str,
        instance: &str,
        tail: usize,
        follow: bool,
        label: bool,
    ) -> mpsc::Receiver<Piece> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (in_tx, in_rx) = mpsc::channel(WINDOW as usize + 4);
        self.asks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request, in_tx);
        let (out_tx, out_rx) = mpsc::channel(PIECES);
        let open = LogMessage::Open {
            request,
            job: job.to_string(),
            instance: instance.to_string(),
            tail: u32::try_from(tail).unwrap_or(u32::MAX),
            follow,
            label,
            reply_to: self.me,
        };
        let registered = Registered(self.clone(), request);
        tokio::spawn(relay(registered, to, open, in_rx, out_tx));
        out_rx
    }
}

async fn relay(
    registered: Registered,
    to: SocketAddr,
    open: LogMessage,
    mut inbox: mpsc::Receiver<LogMessage>,
    out: mpsc::Sender<Piece>,
) {
    let logs = registered.0.clone();
    let request = registered.1;
    let me = logs.me;
    if !logs.send(to, open) {
        let _ = out
            .send(Piece::Lost(format!("the stream queue to {to} is full")))
            .await;
        return;
    }
    let mut next = 0u64;
    let mut keepalive = tokio::time::interval(Duration::from_secs(KEEPALIVE_SECS));
    keepalive.tick().await;
    let silence = Duration::from_secs(ABANDON_SECS);
    let close = |logs: &RemoteLogs| logs.send(to, LogMessage::Close { request, from: me });
    loop {
        tokio::select! {
            got = tokio::time::timeout(silence, inbox.recv()) => match got {
                Err(_) | Ok(None) => {
                    close(&logs);
                    let _ = out.send(Piece::Lost(format!("the node at {to} stopped answering"))).await;
                    return;
                }
                Ok(Some(LogMessage::Chunk { seq, text, .. })) => {
                    if seq != next {
                        close(&logs);
                        let _ = out.send(Piece::Lost("the log stream was interrupted (messages lost)".into())).await;
                        return;
                    }
                    next += 1;
                    // Empty chunks are keepalives, except the first, which
                    // says the node serves the request.
                    if (seq == 0 || !text.is_empty()) && out.send(Piece::Text(text)).await.is_err() {
                        close(&logs);
                        return;
                    }
                    logs.send(to, LogMessage::Ack { request, next, from: me });
                }
                Ok(Some(LogMessage::End { chunks, refused, .. })) => {
                    let last = match refused {
                        Some(r) => Some(Piece::Refused(r)),
                        None if chunks != next => Some(Piece::Lost("the log stream was interrupted (messages lost)".into())),
                        None => None,
                    };
                    if let Some(last) = last {
                        let _ = out.send(last).await;
                    }
                    return;
                }
                Ok(Some(_)) => logs.drop_one("not an answer"),
            },
            _ = keepalive.tick() => {
                logs.send(to, LogMessage::Ack { request, next, from: me });
            }
            _ = out.closed() => {
                close(&logs);
                return;
            }
        }
    }
}
