//! One forwarded request on the fast path: its body read first when it
//! is small (so it can go again), then up to two attempts on instances
//! picked as [`crate::edge::proxy`] picks them, with the same retry rules,
//! counters and JSON errors.

use std::sync::Arc;

use myco_proto::job::Balance;

use super::forward::{self, Client, Done, Req, Scratch};
use super::io::Waited;
use super::{Fast, Forwarding, answer};
use crate::edge::balance::{self, Hop, Upstream};
use crate::edge::metrics::{JobMetrics, UpstreamError};
use crate::edge::proxy::{EdgeState, RETRY_BODY_MAX};

impl Fast {
    /// Forwards the request whose rewritten head is `uhead` (its own head
    /// already consumed from the client's buffer). Returns whether the
    /// client's connection can carry another request.
    pub(super) async fn forward(
        &self,
        client: &mut Client<'_>,
        f: &Forwarding<'_>,
        uhead: &[u8],
        rid: &str,
        scratch: &mut Scratch,
    ) -> bool {
        let (job, entry) = (f.job, f.entry);
        let m: &JobMetrics = &entry.metrics;
        let now_ms = || self.edge.routes.now_ms();
        // A small body is read whole first, so that it can be sent again.
        let buffered = f.body_len <= RETRY_BODY_MAX;
        while buffered && (client.cin.len() as u64) < f.body_len {
            let want = f.body_len as usize - client.cin.len();
            match client.read_body(want).await {
                Ok(()) => {}
                Err(Waited::Timeout) => {
                    let msg = "the request body stopped arriving; send it without pauses";
                    answer::write_error(&mut scratch.out, 408, msg, None, None, true);
                    let _ = client.send(&[&scratch.out]).await;
                    return false;
                }
                _ => return false,
            }
        }
        let req = Req {
            head: uhead,
            body_len: f.body_len,
            buffered,
            idempotent: f.idempotent,
            head_method: f.head_method,
            client_close: f.client_close,
            request_id: rid,
            via: &self.via,
        };
        let mut tried: Option<&Arc<Upstream>> = None;
        let mut last = UpstreamError::Connect;
        for attempt in 0..2 {
            // The first pick at the request's own start: one clock read fewer.
            let at = match attempt {
                0 => self.edge.routes.ms_at(f.started),
                _ => now_ms(),
            };
            let Some(up) = choose(&self.edge, entry, tried.map(|u| &**u), at) else {
                break;
            };
            if attempt > 0 && !m.retry_allowed() {
                tracing::debug!(job, "edge: retry budget spent; not retrying");
                break;
            }
            if attempt > 0 {
                m.retry();
            }
            let guard = up.begin();
            m.in_flight(1);
            let on_head = |status: u16| {
                m.response(status, f.started.elapsed());
                if status >= 500 {
                    note_failure(up, m, now_ms());
                } else {
                    up.succeeded();
                }
            };
            let done =
                forward::attempt(client, &self.pool, addr_of(up), &req, scratch, on_head).await;
            m.in_flight(-1);
            drop(guard);
            match done {
                Done::Relayed { status, keep } => {
                    tracing::debug!(request_id = rid, job, instance = %up.instance, status,
                        ms = f.started.elapsed().as_millis() as u64, "edge request");
                    if buffered {
                        client.cin.consume(f.body_len as usize);
                    }
                    return keep;
                }
                Done::ClientGone => return false,
                Done::Failed(failure) => {
                    m.upstream_error(failure);
                    note_failure(up, m, now_ms());
                    tracing::debug!(request_id = rid, job, instance = %up.instance, error = failure.as_str(), "edge upstream failed");
                    last = failure;
                    tried = Some(up);
                    // A streamed body may be partly sent: it cannot go again.
                    let resendable = buffered || failure == UpstreamError::Connect;
                    if !resendable || !may_retry(failure, f.idempotent) {
                        break;
                    }
                }
            }
        }
        let (status, msg) = match last {
            UpstreamError::Timeout => (504, format!("no instance of {job:?} answered in time")),
            _ => (
                502,
                format!("the instances of {job:?} could not be reached"),
            ),
        };
        // A streamed body was not read to its end: the connection cannot
        // carry another request.
        let close = !buffered || f.client_close;
        if buffered {
            client.cin.consume(f.body_len as usize);
        }
        let ids = Some((rid, self.via.as_str()));
        answer::write_error(&mut scratch.out, status, &msg, Some(job), ids, close);
        m.response(status, f.started.elapsed());
        client.send(&[&scratch.out]).await.is_ok() && !close
    }
}

/// Where to connect for `up`: loopback for a local instance (it may
/// listen there only), its address otherwise (as [`crate::edge::send`]).
fn addr_of(up: &Upstream) -> std::net::SocketAddr {
    match up.hop {
        Hop::Local => std::net::SocketAddr::from(([127, 0, 0, 1], up.addr.port())),
        _ => up.addr,
    }
}

/// Picks the instance for an attempt, as the proxy does.
fn choose<'a>(
    edge: &EdgeState,
    entry: &'a crate::edge::routes::JobEntry,
    exclude: Option<&Upstream>,
    now_ms: u64,
) -> Option<&'a Arc<Upstream>> {
    let chosen = match entry.balance {
        Balance::RoundRobin => balance::round_robin(&entry.ready, exclude, now_ms, &entry.turn),
        Balance::LeastRequests | Balance::PreferLocal => balance::pick(
            &entry.ready,
            exclude,
            now_ms,
            &mut crate::edge::proxy::random,
        ),
    }?;
    let local_first = match entry.balance {
        Balance::PreferLocal => true,
        Balance::LeastRequests => edge.prefer_local,
        Balance::RoundRobin => false,
    };
    Some(if local_first {
        balance::prefer_local(&entry.ready, chosen, exclude, now_ms)
    } else {
        chosen
    })
}

fn note_failure(up: &Upstream, m: &JobMetrics, now_ms: u64) {
    if up.failed(now_ms) {
        m.ejection();
        tracing::info!(instance = %up.instance, addr = %up.addr, "edge: instance ejected after consecutive failures");
    }
}

/// Whether a failed attempt may go to another instance (as the proxy).
fn may_retry(failure: UpstreamError, idempotent: bool) -> bool {
    match failure {
        UpstreamError::Connect => true,
        UpstreamError::Protocol => idempotent,
        UpstreamError::Timeout => false,
    }
}
