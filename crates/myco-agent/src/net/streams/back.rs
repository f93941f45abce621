//! Answers on the asking connection (stream version 4,
//! `myco_proto::compat::STREAM_ANSWERS_BACK`).
//!
//! Up to version 3 a connection carried messages one way, client to
//! server, and a node answered a request on its own connection to the
//! asker. So every request and every answer drew a bare TCP ACK of its own
//! (6 loopback segments per forwarded cache GET, against 4 through a plain
//! forwarder), and the answering node handed each answer to its writer
//! task. From version 4 the server writes a handler's answer on the
//! connection the request came in on, from the reader's task, gathered
//! with the others of the same read into one write; the client reads them
//! there ([`read_answers`]). The answer then carries the request's ACK,
//! and the next request the answer's.
//!
//! Only what a handler answers at once goes back this way (the cache's
//! reads, writes and counts); anything sent later, or larger than
//! [`SMALL`], goes on the node's own connection as before.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use myco_proto::channel::Channel;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client;

use super::framing::{Frame, SMALL, append_frame, read_frame, timed_out};
use super::{Shared, bump, inbound};

/// The way back to the sender of a message, on the connection it came in
/// on. Handlers get one with every message; it leads nowhere when the
/// message came through the mesh loop, on a version 3 connection, or on
/// this node's own connection (an answer needs no answer).
#[derive(Debug, Default)]
pub struct Back {
    open: bool,
    frames: Vec<u8>,
    count: u64,
}

impl Back {
    /// A way back that leads nowhere: [`Back::send`] refuses everything.
    pub fn none() -> Back {
        Back::default()
    }

    pub(super) fn open(open: bool) -> Back {
        Back {
            open,
            ..Back::default()
        }
    }

    /// Queues `message` on `channel` to go back to the sender on the
    /// connection the message being handled came in on. False when there
    /// is no way back (or the message is over [`SMALL`]): the handler then
    /// sends it as it would otherwise, on this node's own connection.
    pub fn send(&mut self, channel: Channel, message: &[u8]) -> bool {
        if !self.open || message.len() > SMALL {
            return false;
        }
        append_frame(&mut self.frames, channel, message);
        self.count += 1;
        true
    }

    /// Bytes queued and not yet written.
    pub(super) fn queued(&self) -> usize {
        self.frames.len()
    }

    /// Writes what is queued, in one write.
    pub(super) async fn flush_to(
        &mut self,
        stream: &mut (impl AsyncWrite + Unpin),
        shared: &Shared,
    ) -> io::Result<()> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let written = timeout(shared.config.idle_timeout, async {
            stream.write_all(&self.frames).await?;
            stream.flush().await
        });
        let result = written.await.unwrap_or_else(|_| Err(timed_out()));
        let (count, bytes) = (self.count, self.frames.len() as u64);
        match &result {
            Ok(()) => {
                bump(&shared.stats.sent_messages, count);
                bump(&shared.stats.answers_back, count);
                bump(&shared.stats.sent_bytes, bytes);
            }
            Err(_) => bump(&shared.stats.send_failures, count),
        }
        self.frames.clear();
        self.count = 0;
        result
    }
}

/// The client's end of a connection: reads what the server writes back
/// (answers, from version 4; from a version 3 server, only its close) and
/// hands each message to its channel's handler, until the server closes,
/// the connection fails, or the server loses our trust after a key
/// change. Its end tells the sending side the connection closed (so does
/// the socket's readiness, sooner: `outbound::closed`).
pub(super) async fn read_answers(
    shared: Arc<Shared>,
    to: SocketAddr,
    certs: Vec<CertificateDer<'static>>,
    mut half: ReadHalf<client::TlsStream<TcpStream>>,
) {
    let peer = certs.first().and_then(|c| super::tls::node_of(c));
    let mut generation = shared.tls().0;
    // An answer is never answered.
    let mut back = Back::none();
    loop {
        // No idle limit: requests may go out for a long time with no
        // answer coming back (replication, messages); the sending side
        // closes an idle connection.
        let (channel, message) = match read_frame(&mut half, &shared.config, None).await {
            Ok(Frame::Message(channel, message)) => (channel, message),
            Ok(Frame::Oversize(_)) => {
                bump(&shared.stats.oversize_refused, 1);
                return;
            }
            Ok(Frame::End) | Err(_) => return,
        };
        let (now, tls) = shared.tls();
        if now != generation {
            if !tls.trusts_server(Some(&certs)) {
                bump(&shared.stats.untrusted_after_rekey, 1);
                return;
            }
            generation = now;
        }
        if inbound::dispatch(&shared, to, peer, channel, message, &mut back)
            .await
            .is_err()
        {
            return;
        }
    }
}
