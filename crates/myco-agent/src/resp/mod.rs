//! The cache and messaging over the Redis protocol (`--resp ADDR:PORT`),
//! so any Redis client reaches the mesh's cache through any node.
//!
//! - [`parse`]: the request parser (bounded; inline commands split as
//!   Redis splits them, quotes included) and reply encoders.
//! - `table`: the commands spoken, with Redis' arity and its errors for
//!   an unknown command or a wrong argument count.
//! - [`commands`]: the connection's session and what each command does,
//!   on [`crate::cache::Cache`] and [`crate::msg::Messaging`], the same
//!   operations HTTP uses; beside it `set` (`SET`, `EXPIRE` and their
//!   options), `multi` (`MULTI`/`EXEC`/`DISCARD`), `pubsub` (`SUBSCRIBE`,
//!   `UNSUBSCRIBE`) and `hello` (`AUTH`, `HELLO`).
//!
//! `MULTI` queues a connection's commands and `EXEC` runs them in order,
//! answering the array of their replies, as redis-py's `pipeline()`
//! expects; but **not isolated**: the cache is spread over the mesh, so
//! other clients' commands may run between them (`WATCH` is refused).
//!
//! A connection speaks RESP2 until it sends `HELLO 3` (redis-py's default
//! since version 5, `redis-cli -3`): then nulls are `_`, `HELLO` and
//! `CONFIG GET` answer maps, and published messages and (un)subscribe
//! confirmations are push frames (`>`), which lets a subscribed RESP3
//! connection run any command, as in Redis. `HELLO 4` and up: `NOPROTO`.
//!
//! Off loopback, a connection must first send `AUTH <API token>` (the
//! same token as the HTTP API): the cache is writable through this port.
//!
//! Keys: `bucket:rest` lives in `bucket` when such a bucket exists, every
//! other key in bucket `default` (created on first use). Bounded: at most
//! [`MAX_CONNECTIONS`] connections (more are refused with an error), a
//! request of at most [`parse::MAX_BULK`] per argument (past it, an error
//! naming the limit, then the connection closes), at most 1024 commands
//! and 8 MiB of arguments queued in a transaction, replies flushed after
//! each batch of pipelined commands.

pub mod commands;
mod hello;
mod multi;
pub use myco_proto::resp as parse;
mod pubsub;
mod set;
mod table;
#[cfg(test)]
mod wire_tests;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::msg::Messaging;
use commands::Session;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Bytes of published messages gathered into one write to a subscribed
/// connection (a burst goes out in one syscall rather than one each).
const PUSH_BATCH: usize = 64 * 1024;
/// After a request that cannot be parsed, how long what the client still
/// sends is read and dropped so that it reads the error ...
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(5);
/// ... and how much of it at most (a value of up to this size gets the
/// error; past it the client may see the connection reset instead).
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// A pause this long in the client's sending ends that drain early.
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Binds `addr` and serves it until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    cache: Arc<Cache>,
    msg: Arc<Messaging>,
    token: Arc<str>,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    // On loopback, as reads of the HTTP API, no token is asked for.
    let token = (!addr.ip().is_loopback()).then_some(token);
    tracing::info!(%addr, token_required = token.is_some(), "Redis protocol listening");
    Ok(tokio::spawn(accept(listener, cache, msg, token)))
}

async fn accept(
    listener: TcpListener,
    cache: Arc<Cache>,
    msg: Arc<Messaging>,
    token: Option<Arc<str>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "Redis protocol accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let _ = stream
                .write_all(b"-ERR max number of clients reached\r\n")
                .await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (cache, msg, token) = (cache.clone(), msg.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, cache, msg, token).await {
                tracing::debug!(%peer, error = %e, "Redis protocol connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    cache: Arc<Cache>,
    msg: Arc<Messaging>,
    token: Option<Arc<str>>,
) -> std::io::Result<()> {
    let mut session = Session::new(cache, msg, token);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = stream.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut used = 0;
                loop {
                    match parse::parse(&buf[used..]) {
                        Ok(Some((args, len))) => {
                            used += len;
                            if !args.is_empty() && session.run(args, &mut out).await {
                                stream.write_all(&out).await?;
                                return Ok(());
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            parse::reply::error(&mut out, &format!("ERR {e}"));
                            stream.write_all(&out).await?;
                            return close_after_error(stream).await;
                        }
                    }
                }
                buf.drain(..used);
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
            }
            // While this write waits on a slow client, the subscriptions'
            // own queues fill and then lose messages, counted: a publisher
            // never waits for a subscriber.
            d = std::future::poll_fn(|cx| session.poll_push(cx)) => {
                commands::push_message(&mut out, &d, session.resp3());
                while out.len() < PUSH_BATCH && let Some(d) = session.try_push() {
                    commands::push_message(&mut out, &d, session.resp3());
                }
                stream.write_all(&out).await?;
                out.clear();
            }
        }
    }
}

/// Ends a connection whose framing is lost, once the error is written.
/// Closing a socket with unread bytes sends a reset, and a reset makes
/// the client's system drop what it had not read yet, the error included:
/// a client still sending a value over the limit saw "connection reset"
/// instead. So the error is followed by the end of our sending, and what
/// the client still sends is read and dropped (bounded in time and bytes)
/// before the socket closes.
async fn close_after_error(mut stream: TcpStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let until = tokio::time::Instant::now() + DRAIN_FOR;
    let mut scratch = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        let wait = DRAIN_IDLE.min(until.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    Ok(())
}
