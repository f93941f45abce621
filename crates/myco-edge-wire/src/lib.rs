//! The edge's HTTP/1.1 wire code, for its fast path (`myco_agent::edge::fast`,
//! which routes, balances, retries and counts around it): request and
//! response heads parsed with `httparse` in place and rewritten straight
//! into the bytes sent ([`head`]), chunked framing passed through
//! ([`chunked`]), reads and writes on raw sockets with deadlines ([`io`]),
//! the keep-alive pool of raw connections to instances ([`rawpool`]) and
//! one forwarding attempt ([`forward`]).
//!
//! Its own crate so that the release build optimises it for speed while
//! the rest of the agent is optimised for size: every proxied request runs
//! through it.

pub mod chunked;
pub mod forward;
pub mod head;
pub mod io;
pub mod rawpool;

use std::time::Duration;

/// Why a request to an instance failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connecting failed or was refused.
    Connect,
    /// No response head in time.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Protocol,
}

impl UpstreamError {
    /// Every kind, in label order.
    pub const ALL: [UpstreamError; 3] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Protocol,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Protocol => "protocol",
        }
    }
}

/// How long a pooled connection may sit idle: shorter than usual upstream
/// keep-alives (Node's 5 s is the short one), so the pool seldom sends on a
/// connection the instance is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per instance.
pub const POOL_MAX_IDLE: usize = 256;
/// Time to connect to an instance before trying another.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for an instance's response head.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
