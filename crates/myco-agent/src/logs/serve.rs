//! Serving another node's request for an instance's logs from this node's
//! files.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use myco_proto::logs::{ABANDON_SECS, CHUNK_BYTES, KEEPALIVE_SECS, LogMessage, LogRefusal, WINDOW};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::time::Instant;

use super::RemoteLogs;
use super::reader::{InstanceLog, chunks, existing_dir};
use crate::exec::logs::{FOLLOW_POLL, MAX_TAIL_LINES};

/// How long to wait for room in a full stream queue before trying again.
const QUEUE_RETRY: Duration = Duration::from_millis(50);

/// Takes requests from the mesh loop and starts a task for each one that
/// gets a slot; the others are answered busy.
pub(super) async fn dispatch(logs: Arc<RemoteLogs>, mut opens: mpsc::Receiver<LogMessage>) {
    while let Some(open) = opens.recv().await {
        let LogMessage::Open {
            request,
            reply_to,
            follow,
            ..
        } = &open
        else {
            continue;
        };
        let (request, reply_to) = (*request, *reply_to);
        let permit = if *follow {
            logs.followers.try_acquire()
        } else {
            logs.tails.clone().try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            logs.send(reply_to, end(request, 0, Some(LogRefusal::Busy)));
            continue;
        };
        let (ack_tx, ack_rx) = watch::channel(0);
        {
            let mut serving = logs.serving.lock().unwrap_or_else(PoisonError::into_inner);
            if serving.contains_key(&(reply_to, request)) {
                logs.drop_one("request already served");
                continue;
            }
            serving.insert((reply_to, request), ack_tx);
        }
        logs.active.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(logs.clone(), open, ack_rx, permit));
    }
}

fn end(request: u64, chunks: u64, refused: Option<LogRefusal>) -> LogMessage {
    LogMessage::End {
        request,
        chunks,
        refused,
    }
}

/// One request's sending side.
struct Answer {
    logs: Arc<RemoteLogs>,
    to: SocketAddr,
    request: u64,
    seq: u64,
    acks: watch::Receiver<u64>,
    heard: Instant,
}

impl Answer {
    /// Whether the asker still listens (acknowledged lately, not closed).
    fn listening(&mut self) -> bool {
        match self.acks.has_changed() {
            Ok(true) => {
                self.acks.borrow_and_update();
                self.heard = Instant::now();
            }
            Ok(false) => {}
            Err(_) => return false,
        }
        self.heard.elapsed() < Duration::from_secs(ABANDON_SECS)
    }

    /// Sends `message`, waiting while the stream queue is full; false when
    /// the asker stopped listening meanwhile.
    async fn send(&mut self, message: LogMessage) -> bool {
        let bytes = message.encode();
        loop {
            let sent =
                self.logs
                    .streams
                    .send(self.to, myco_proto::channel::Channel::Jobs, bytes.clone());
            if sent.is_ok() {
                return true;
            }
            if !self.listening() {
                return false;
            }
            tokio::time::sleep(QUEUE_RETRY).await;
        }
    }

    /// Sends the next chunk once the window allows; false when the asker
    /// stopped listening.
    async fn chunk(&mut self, text: String) -> bool {
        while self.seq >= *self.acks.borrow() + WINDOW {
            let deadline = self.heard + Duration::from_secs(ABANDON_SECS);
            match tokio::time::timeout_at(deadline, self.acks.changed()).await {
                Ok(Ok(())) => self.heard = Instant::now(),
                _ => return false,
            }
        }
        let message = LogMessage::Chunk {
            request: self.request,
            seq: self.seq,
            text,
        };
        self.seq += 1;
        self.send(message).await
    }
}

/// Answers one request: the tail in chunks, then new lines while following.
async fn serve(
    logs: Arc<RemoteLogs>,
    open: LogMessage,
    acks: watch::Receiver<u64>,
    permit: OwnedSemaphorePermit,
) {
    let LogMessage::Open {
        request,
        instance,
        tail,
        follow,
        label,
        reply_to,
        ..
    } = open
    else {
        logs.active.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    let mut answer = Answer {
        logs: logs.clone(),
        to: reply_to,
        request,
        seq: 0,
        acks,
        heard: Instant::now(),
    };
    let refused = serve_lines(&mut answer, &instance, tail, follow, label).await;
    let last = end(request, answer.seq, refused);
    answer.send(last).await;
    logs.serving
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&(reply_to, request));
    // The slot is free before the request stops counting as served.
    drop(permit);
    logs.active.fetch_sub(1, Ordering::Relaxed);
}

async fn serve_lines(
    answer: &mut Answer,
    instance: &str,
    tail: u32,
    follow: bool,
    label: bool,
) -> Option<LogRefusal> {
    if crate::exec::instance_dir::instance_dir(&answer.logs.data_dir, instance).is_err() {
        return Some(LogRefusal::Invalid(format!(
            "not an instance id: {instance:?}"
        )));
    }
    let Some(dir) = existing_dir(&answer.logs.data_dir, instance) else {
        return Some(LogRefusal::NotFound);
    };
    let id = instance.to_string();
    let tail = (tail as usize).min(MAX_TAIL_LINES);
    let opened =
        tokio::task::spawn_blocking(move || InstanceLog::open(&dir, &id, label, tail, follow))
            .await;
    let Ok((text, mut reader)) = opened else {
        return Some(LogRefusal::Invalid("reading the log files failed".into()));
    };
    // Chunk 0 always goes, even empty: it tells the asker this node serves.
    let mut pieces: Vec<String> = chunks(&text, CHUNK_BYTES)
        .into_iter()
        .map(str::to_string)
        .collect();
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    drop(text);
    for piece in pieces {
        if !answer.chunk(piece).await {
            return None;
        }
    }
    if !follow {
        return None;
    }
    let mut quiet = Instant::now();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        if !answer.listening() {
            return None;
        }
        let (text, back) = match tokio::task::spawn_blocking(move || {
            let text = reader.poll();
            (text, reader)
        })
        .await
        {
            Ok(x) => x,
            Err(_) => return None,
        };
        reader = back;
        // An empty chunk now and then tells the asker this node is alive.
        if text.is_empty() && quiet.elapsed() < Duration::from_secs(KEEPALIVE_SECS) {
            continue;
        }
        quiet = Instant::now();
        let pieces: Vec<String> = if text.is_empty() {
            vec![String::new()]
        } else {
            chunks(&text, CHUNK_BYTES)
                .into_iter()
                .map(str::to_string)
                .collect()
        };
        for piece in pieces {
            if !answer.chunk(piece).await {
                return None;
            }
        }
    }
}
