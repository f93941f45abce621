//! The streams' counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares the counters once, as atomics inside and a plain snapshot outside.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Stream counters since [`Streams::bind`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StreamStats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        #[derive(Default)]
        pub(super) struct Counters {
            $(pub(super) $name: AtomicU64,)*
        }

        impl Counters {
            pub(super) fn snapshot(&self) -> StreamStats {
                StreamStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Messages written to a connection the server had accepted (not an
    /// acknowledgement: a connection dying afterwards loses them).
    sent_messages,
    /// Payload bytes of `sent_messages`.
    sent_bytes,
    /// Of `sent_messages`, answers written back on the connection their
    /// request came in on (stream version 4, see `back`).
    answers_back,
    /// Messages received and handed to the incoming channel.
    received_messages,
    /// Payload bytes of `received_messages`.
    received_bytes,
    /// Outgoing TCP connects that failed or timed out.
    connect_failures,
    /// Outgoing TLS handshakes that failed: the peer is not trusted by our
    /// ring, refused our certificate, or is not a myco stream port.
    outbound_handshake_failures,
    /// Inbound handshakes that failed: no or untrusted client certificate,
    /// not TLS at all, or too slow.
    inbound_handshake_failures,
    /// Messages refused for size: by `send`, or a length prefix received
    /// (that connection is then closed).
    oversize_refused,
    /// Messages refused by `send` because the peer's queue held as many
    /// messages as it may.
    queue_full,
    /// Messages refused by `send` because the peer's queue held as many
    /// bytes as it may.
    queue_bytes_full,
    /// Messages refused by `send_if_reachable` because the peer's last
    /// connection attempt failed and its back-off had not ended.
    unreachable_refused,
    /// Times a connection waited for room in the incoming byte budget
    /// (backpressure on that peer, nothing lost).
    incoming_waits,
    /// Messages received on a channel this build does not know: dropped.
    unknown_channel,
    /// Queued messages dropped: connect, handshake or write failed, the peer
    /// was backing off after a failure, or its task was evicted.
    send_failures,
    /// Peer tasks evicted (least recently used) to stay within `max_peers`.
    peers_evicted,
    /// Inbound connections closed at once because `max_inbound` were open.
    inbound_refused,
    /// Live connections (either way) closed because, after `set_keys`, the
    /// ring no longer trusts the peer's certificate.
    untrusted_after_rekey,
    /// Requests answered on a connection the asking task held for the
    /// exchange (see `direct`).
    exchanges,
    /// Connections opened for exchanges.
    exchange_connections,
}

pub(super) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
