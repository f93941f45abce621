//! The edge's fast path: plain HTTP/1.1 keep-alive requests to local (or
//! directly reached) instances, served without hyper, axum or a
//! `HeaderMap`. Heads are parsed in place with `httparse`
//! ([`head`]), rewritten straight into the bytes sent, and relayed on raw
//! pooled connections ([`rawpool`], [`forward`]); chunked answers pass
//! through with their framing ([`chunked`]).
//!
//! Why: under load the hyper path spent about 3x nginx's CPU per request,
//! flat across hyper's two HTTP/1.1 state machines, axum's routing,
//! header maps built and cloned, and task wake-ups (BENCHMARKS.md).
//!
//! It routes, balances, retries, counts and logs as [`super::proxy`] does,
//! with the same JSON errors. The first request it does not serve hands
//! the connection to hyper, with the bytes read so far replayed
//! ([`crate::net::serve::Handoff::Hyper`]): an `Upgrade` or
//! `Expect`, a `Transfer-Encoding` body, an h2c preface, HTTP/1.0, a head
//! hyper answers with a precise error (bad syntax 400, too large or too
//! many fields 431, a body over the limit 413), a bare LF, or a job with an
//! instance reached through another node's relay. Reserve connections go
//! to hyper at once.
//!
//! `MYCO_EDGE_FAST=0` turns it off (read once, when the edge starts).

// The wire code is a crate of its own, built for speed (see its docs).
pub use myco_edge_wire::{chunked, forward, head, io, rawpool};
pub mod answer;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::balance::Hop;
use super::proxy::EdgeState;
use crate::net::serve::{FastConn, FastPath, Handoff, ServeCounters};
use forward::{Client, Scratch};
use head::Parsed;
use io::{Buf, Timer, Waited};

/// Whether the fast path is on (`MYCO_EDGE_FAST`, `0` is off).
pub fn enabled() -> bool {
    std::env::var("MYCO_EDGE_FAST").map_or(DEFAULT_ON, |v| v != "0")
}

/// On unless turned off (the A/B in BENCHMARKS.md, "sixth pass").
const DEFAULT_ON: bool = true;

/// The fast path, shared by the edge's connections.
pub struct Fast {
    edge: Arc<EdgeState>,
    pool: rawpool::RawPool,
    via: String,
}

impl Fast {
    /// The fast path for the edge with `edge`'s routes and identity.
    pub fn new(edge: Arc<EdgeState>) -> Self {
        let via = edge.via.to_str().unwrap_or("1.1 myco").to_owned();
        Fast {
            edge,
            pool: rawpool::RawPool::default(),
            via,
        }
    }
}

impl FastPath for Fast {
    fn serve<'a>(
        &'a self,
        conn: FastConn<'a>,
    ) -> Pin<Box<dyn Future<Output = Handoff> + Send + 'a>> {
        Box::pin(self.run(conn))
    }
}

/// How one request's head was dealt with before any instance was tried.
enum Step<'g> {
    /// Answered here (an error, written out); close the connection after
    /// if set (its body was not read).
    Answered { close: bool, head_len: usize },
    /// Go to hyper with everything buffered.
    Hyper,
    /// Forward it.
    Forward(Forwarding<'g>),
}

/// A request to forward, its head rewritten into the request buffer.
struct Forwarding<'g> {
    job: &'g str,
    entry: &'g super::routes::JobEntry,
    started: Instant,
    head_len: usize,
    body_len: u64,
    idempotent: bool,
    head_method: bool,
    client_close: bool,
}

impl Fast {
    async fn run(&self, c: FastConn<'_>) -> Handoff {
        let FastConn {
            stream,
            peer,
            limits,
            counters,
            stop,
        } = c;
        let mut client = Client {
            stream,
            cin: Buf::with_capacity(8 * 1024),
            timer: Timer::default(),
            body_stall: limits.body_stall_timeout,
            send_stall: limits.send_stall_timeout,
            body_timeouts: &counters.body_timeouts,
            send_timeouts: &counters.send_timeouts,
        };
        let mut scratch = Scratch {
            // Grown by the first forwarded request: a connection that
            // sends none (or only errors) holds the client buffer alone.
            ubuf: Buf::with_capacity(0),
            out: Vec::new(),
        };
        let mut uhead = Vec::new();
        // Formatted once: the address is the connection's.
        let peer_ip = peer.ip().to_string();
        let mut rid = String::with_capacity(32);
        let mut served = 0u64;
        // Wakes an idle connection when the server stops. One wait for the
        // connection's life: made afresh for each request it cost a waiter
        // registered and removed under the channel's lock every time.
        let mut stop_rx = stop.clone();
        let stopping = stop_rx.changed();
        tokio::pin!(stopping);
        loop {
            // A whole head first, in the limits' time.
            let mut head_started: Option<Instant> = None;
            while !head::ends(client.cin.data()) && client.cin.len() < limits.max_header_bytes {
                let (limit, counter) = match head_started {
                    Some(t) => (
                        limits.header_timeout.saturating_sub(t.elapsed()),
                        &counters.header_timeouts,
                    ),
                    None if served == 0 => (limits.header_timeout, &counters.header_timeouts),
                    None => (limits.idle_timeout, &counters.idle_closed),
                };
                if *stop.borrow() && client.cin.is_empty() {
                    return Handoff::Close;
                }
                let read = tokio::select! {
                    biased;
                    r = io::read_some(client.stream, &mut client.cin, 8 * 1024, &mut client.timer, limit, false) => r,
                    _ = &mut stopping, if client.cin.is_empty() => return Handoff::Close,
                };
                match read {
                    Ok(0) | Err(Waited::Closed) => return Handoff::Close,
                    Ok(_) => {
                        head_started.get_or_insert_with(Instant::now);
                    }
                    Err(Waited::Timeout) => {
                        ServeCounters::bump(counter);
                        return Handoff::Close;
                    }
                }
            }
            // The table as it is now, not when the connection went idle.
            let routes = self.edge.routes.load();
            let mut hdrs = head::slots();
            let n = limits.max_headers.min(head::MAX_HEADERS);
            let step = match head::parse(
                client.cin.data(),
                &mut hdrs[..n],
                limits.max_header_bytes,
                limits.max_body_bytes,
            ) {
                // An end of head that httparse does not see as one:
                // hyper reads it its way.
                Parsed::Partial | Parsed::Hyper => Step::Hyper,
                Parsed::Fast(req) => self.prepare(&routes, &req, &peer_ip, &mut uhead, &mut rid),
            };
            let f = match step {
                Step::Hyper => return Handoff::Hyper(client.cin.into_unread()),
                Step::Answered { close, head_len } => {
                    if client.send(&[&uhead]).await.is_err() || close {
                        return Handoff::Close;
                    }
                    // Served: its head (no body: else `close`) is done.
                    client.cin.consume(head_len);
                    served += 1;
                    continue;
                }
                Step::Forward(f) => f,
            };
            served += 1;
            client.cin.consume(f.head_len);
            // As on the hyper path: the request's lines carry its id and
            // job in an `edge` span (made only when debug is on).
            let span = tracing::debug_span!("edge", request_id = &*rid, job = f.job);
            if !self
                .forward(&mut client, &f, &uhead, &rid, &mut scratch)
                .instrument(span)
                .await
            {
                return Handoff::Close;
            }
        }
    }

    /// Routes a parsed head: an answer written into `out` (an error), a
    /// hand-over to hyper, or the head rewritten into `out` to forward.
    fn prepare<'g>(
        &self,
        routes: &'g super::routes::Snapshot,
        req: &head::Request<'_>,
        ip: &str,
        out: &mut Vec<u8>,
        rid: &mut String,
    ) -> Step<'g> {
        // An answer from here closes when the client asked, or when the
        // request's body was not read (it cannot be skipped safely).
        let close = req.content_length > 0 || req.close;
        let head_len = req.raw.len();
        // Host names are case-insensitive, job names lowercase: the rare
        // host with capitals goes to hyper's path, which lowers it.
        if req
            .host
            .is_some_and(|h| h.bytes().any(|c| c.is_ascii_uppercase()))
        {
            return Step::Hyper;
        }
        // Every answer carries the request id, errors too.
        rid.clear();
        match head::client_request_id(req.headers) {
            Some(id) => rid.push_str(id),
            None => super::proxy::fresh_id_into(rid),
        }
        let ids = Some((rid.as_str(), self.via.as_str()));
        let Some((job, stripped)) =
            super::rewrite::route(req.host, req.target, |j| routes.jobs.contains_key(j))
        else {
            let msg = "no job named: use http://EDGE/<job>/... or Host: <job>";
            answer::write_error(out, 404, msg, None, ids, close);
            return Step::Answered { close, head_len };
        };
        let Some((job, entry)) = routes.jobs.get_key_value(job) else {
            let msg = format!("no job {job:?} in the mesh; `myco jobs` lists them");
            answer::write_error(out, 404, &msg, Some(job), ids, close);
            return Step::Answered { close, head_len };
        };
        // Instances behind a relay are hyper's (HTTP/2 over mutual TLS):
        // decided before anything is counted, so hyper counts it once.
        if self.edge.relay.is_some() && entry.ready.iter().any(|u| matches!(u.hop, Hop::Relay(_))) {
            return Step::Hyper;
        }
        let started = Instant::now();
        let m = &entry.metrics;
        m.request();
        if head::is_loop(req.headers, &self.edge.via_token) {
            let msg = "this request already passed through this edge (Via): a routing loop";
            answer::write_error(out, 508, msg, Some(job), ids, close);
            m.response(508, started.elapsed());
            return Step::Answered { close, head_len };
        }
        if entry.ready.is_empty() {
            let msg = super::proxy::no_ready(job, entry.stopped);
            tracing::debug!(job, "edge: no ready instance");
            answer::write_error(out, 503, &msg, Some(job), ids, close);
            m.response(503, started.elapsed());
            return Step::Answered { close, head_len };
        }
        let mut path = String::new();
        let path = match stripped {
            None => req.target,
            Some(s) if s.starts_with('/') => s,
            Some(s) => {
                path.push('/');
                path.push_str(s);
                &path
            }
        };
        head::write_request(out, req, path, rid, ip, &self.via);
        Step::Forward(Forwarding {
            job,
            entry,
            started,
            head_len: req.raw.len(),
            body_len: req.content_length,
            idempotent: matches!(
                req.method,
                "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
            ),
            head_method: req.method == "HEAD",
            client_close: req.close,
        })
    }
}

mod request;

#[cfg(test)]
#[path = "tests_instance.rs"]
mod test_instance;
#[cfg(test)]
#[path = "tests.rs"]
mod tests;
