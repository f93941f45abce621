//! One attempt of the fast path on one instance: the rewritten head and
//! the body sent on a pooled (or new) raw connection, the answer's head
//! read and rewritten, its body relayed by its own framing.
//!
//! A pooled connection that turns out dead before any answer byte (the
//! instance closed it while idle) is replaced by a new one and the
//! request sent again when that is safe: an idempotent method, or the
//! write itself failed (the instance had closed). A streamed body (over
//! the agent's `edge::proxy::RETRY_BODY_MAX`) is never sent twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::head::{self, Answer, Framing};
use crate::io::{Buf, Timer, Waited, read_some, write_all};
use crate::rawpool::{RawPool, Upconn};
use crate::{RESPONSE_TIMEOUT, UpstreamError};

/// Bytes read from an instance at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The client's side of the connection, as one request uses it.
pub struct Client<'a> {
    /// Its socket.
    pub stream: &'a mut TcpStream,
    /// Bytes read from it and not yet served (the request's body first).
    pub cin: Buf,
    /// The connection's one timer.
    pub timer: Timer,
    /// Longest wait for more of a request body.
    pub body_stall: Duration,
    /// Longest wait for the client to take more of an answer.
    pub send_stall: Duration,
    /// Counts body reads that stalled past `body_stall`.
    pub body_timeouts: &'a AtomicU64,
    /// Counts writes that stalled past `send_stall`.
    pub send_timeouts: &'a AtomicU64,
}

impl Client<'_> {
    /// Reads up to `max` more bytes of the request body into `cin`; a
    /// stall past the body limit is counted. `Ok` means bytes came.
    pub async fn read_body(&mut self, max: usize) -> Result<(), Waited> {
        let stall = self.body_stall;
        match read_some(
            self.stream,
            &mut self.cin,
            max,
            &mut self.timer,
            stall,
            false,
        )
        .await
        {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err(Waited::Closed),
            Err(Waited::Timeout) => {
                self.body_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(Waited::Timeout)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes to the client; a stall past the limit is counted.
    pub async fn send(&mut self, bufs: &[&[u8]]) -> Result<(), Waited> {
        let r = write_all(&*self.stream, bufs, &mut self.timer, self.send_stall).await;
        if r == Err(Waited::Timeout) {
            self.send_timeouts.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// One request as the attempt sends it.
pub struct Req<'a> {
    /// The head as it leaves for the instance.
    pub head: &'a [u8],
    /// The body's length; when `buffered`, it is all in the client's buffer.
    pub body_len: u64,
    /// The body is in the client's buffer (it can be sent again).
    pub buffered: bool,
    /// The method is idempotent (a dead pooled connection's request may go
    /// again).
    pub idempotent: bool,
    /// HEAD: the answer has no body whatever it says.
    pub head_method: bool,
    /// The client asked to close after this answer.
    pub client_close: bool,
    /// The request id, returned to the client.
    pub request_id: &'a str,
    /// This edge's `Via` entry.
    pub via: &'a str,
}

/// How an attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    /// An answer went to the client (maybe cut short): its status, and
    /// whether the client's connection can carry another request.
    Relayed {
        /// The answer's status.
        status: u16,
        /// The client's connection can go on.
        keep: bool,
    },
    /// Nothing went to the client; the instance failed this way.
    Failed(UpstreamError),
    /// The client went away or stalled while its body was read.
    ClientGone,
}

/// What the attempt's buffers are (reused across requests).
pub struct Scratch {
    /// The answer's bytes from the instance.
    pub ubuf: Buf,
    /// The answer's head as it leaves for the client.
    pub out: Vec<u8>,
}

/// Sends `req` to `addr` and relays the answer; `on_head` is called with
/// the status when the answer's head is in (metrics, ejection).
pub async fn attempt(
    client: &mut Client<'_>,
    pool: &RawPool,
    addr: SocketAddr,
    req: &Req<'_>,
    scratch: &mut Scratch,
    on_head: impl FnOnce(u16),
) -> Done {
    let Ok(mut conn) = pool.get(addr).await else {
        return Done::Failed(UpstreamError::Connect);
    };
    let answer = loop {
        match exchange(client, &mut conn, req, scratch).await {
            Ok(a) => break a,
            Err(Failure::Stale { write_failed })
                if conn.reused && req.buffered && (req.idempotent || write_failed) =>
            {
                match RawPool::connect(addr).await {
                    Ok(fresh) => conn = fresh,
                    Err(_) => return Done::Failed(UpstreamError::Connect),
                }
            }
            Err(Failure::Stale { .. }) => return Done::Failed(UpstreamError::Protocol),
            Err(Failure::Upstream(e)) => return Done::Failed(e),
            Err(Failure::Client) => return Done::ClientGone,
        }
    };
    on_head(answer.status);
    let status = answer.status;
    let (keep_client, reusable) = relay_body(client, &mut conn.stream, &answer, req, scratch).await;
    if reusable {
        pool.put(addr, conn.stream);
    }
    Done::Relayed {
        status,
        keep: keep_client,
    }
}

enum Failure {
    /// The connection gave no answer byte: maybe a pooled one the instance
    /// had closed.
    Stale {
        write_failed: bool,
    },
    Upstream(UpstreamError),
    Client,
}

/// Writes the request and reads the answer's head (1xx interim answers
/// go to the client on the way).
async fn exchange(
    client: &mut Client<'_>,
    conn: &mut Upconn,
    req: &Req<'_>,
    scratch: &mut Scratch,
) -> Result<Answer, Failure> {
    let up = &mut conn.stream;
    let stall = client.body_stall;
    if req.buffered {
        let body = &client.cin.data()[..req.body_len as usize];
        write_all(&*up, &[req.head, body], &mut client.timer, stall)
            .await
            .map_err(|_| Failure::Stale { write_failed: true })?;
    } else {
        stream_body(client, up, req).await?;
    }
    scratch.ubuf.consume(usize::MAX);
    loop {
        if !scratch.ubuf.is_empty() {
            let parsed = head::response(
                scratch.ubuf.data(),
                req.head_method,
                req.request_id,
                req.via,
                req.client_close,
                &mut scratch.out,
            );
            match parsed {
                Err(_) => return Err(Failure::Upstream(UpstreamError::Protocol)),
                Ok(Some(a)) if a.status == 101 => {
                    return Err(Failure::Upstream(UpstreamError::Protocol));
                }
                Ok(Some(a)) if a.status < 200 => {
                    // An interim answer (103 Early Hints): passed on.
                    scratch.ubuf.consume(a.len);
                    client
                        .send(&[&scratch.out])
                        .await
                        .map_err(|_| Failure::Client)?;
                    continue;
                }
                Ok(Some(a)) => return Ok(a),
                Ok(None) => {}
            }
        }
        let seen = !scratch.ubuf.is_empty();
        match read_some(
            up,
            &mut scratch.ubuf,
            READ_CHUNK,
            &mut client.timer,
            RESPONSE_TIMEOUT,
            false,
        )
        .await
        {
            Ok(n) if n > 0 => {}
            Err(Waited::Timeout) => return Err(Failure::Upstream(UpstreamError::Timeout)),
            _ if seen => return Err(Failure::Upstream(UpstreamError::Protocol)),
            _ => {
                return Err(Failure::Stale {
                    write_failed: false,
                });
            }
        }
    }
}

/// Sends the head and a body too large to keep: what the client's buffer
/// holds, then the rest as it arrives.
async fn stream_body(
    client: &mut Client<'_>,
    up: &mut TcpStream,
    req: &Req<'_>,
) -> Result<(), Failure> {
    let stall = client.body_stall;
    let have = (client.cin.len() as u64).min(req.body_len) as usize;
    write_all(
        &*up,
        &[req.head, &client.cin.data()[..have]],
        &mut client.timer,
        stall,
    )
    .await
    .map_err(|_| Failure::Upstream(UpstreamError::Protocol))?;
    client.cin.consume(have);
    let mut left = req.body_len - have as u64;
    while left > 0 {
        let max = (left as usize).min(READ_CHUNK);
        client.read_body(max).await.map_err(|_| Failure::Client)?;
        let n = client.cin.len();
        write_all(&*up, &[client.cin.data()], &mut client.timer, stall)
            .await
            .map_err(|_| Failure::Upstream(UpstreamError::Protocol))?;
        client.cin.consume(n);
        left -= n as u64;
    }
    Ok(())
}

/// Relays the answer's head and body to the client. Returns whether the
/// client's connection can go on, and whether the instance's connection
/// was read to the end of this answer and may be pooled.
async fn relay_body(
    client: &mut Client<'_>,
    up: &mut TcpStream,
    answer: &Answer,
    req: &Req<'_>,
    scratch: &mut Scratch,
) -> (bool, bool) {
    let Scratch { ubuf, out } = scratch;
    ubuf.consume(answer.len);
    let keep = !req.client_close && answer.framing != Framing::UntilClose;
    let mut chunked = crate::chunked::Chunked::default();
    let mut left = match answer.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut first = true;
    loop {
        // What of the buffer belongs to this body, and whether it ends there.
        let (take, ended) = match answer.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let take = (ubuf.len() as u64).min(left);
                left -= take;
                (take as usize, left == 0)
            }
            Framing::Chunked => match chunked.feed(ubuf.data()) {
                Ok(Some(n)) => (n, true),
                Ok(None) => (ubuf.len(), false),
                // The head is out: the client's connection can only close.
                Err(_) => return (false, false),
            },
            Framing::UntilClose => (ubuf.len(), false),
        };
        let body = &ubuf.data()[..take];
        let sent = if first {
            client.send(&[out, body]).await
        } else {
            client.send(&[body]).await
        };
        first = false;
        if sent.is_err() {
            return (false, false);
        }
        ubuf.consume(take);
        if ended {
            // Bytes past the answer: nothing was asked; do not pool.
            let clean = ubuf.is_empty() && !answer.close;
            ubuf.consume(usize::MAX);
            return (keep, clean);
        }
        match read_body(up, ubuf, &mut client.timer).await {
            Ok(n) if n > 0 => {}
            // The end of a body delimited by the close.
            Ok(_) if answer.framing == Framing::UntilClose => return (false, false),
            _ => return (false, false),
        }
    }
}

/// Reads more of an answer's body, acknowledging at once what arrived
/// when the socket is empty (see [`read_some`]).
async fn read_body(up: &mut TcpStream, ubuf: &mut Buf, timer: &mut Timer) -> Result<usize, Waited> {
    read_some(up, ubuf, READ_CHUNK, timer, RESPONSE_TIMEOUT, true).await
}
