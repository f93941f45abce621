//! The streams' limits and timeouts.

use std::time::Duration;

/// Bytes of incoming messages buffered for the mesh loop before
/// connections stop being read: two messages of the largest size, so one
/// big anti-entropy reply can be consumed while the next arrives, and a
/// fixed ceiling on what peers can make this node hold.
pub const INCOMING_BYTES: usize = 16 << 20;
/// Bytes queued per peer before [`Streams::send`] refuses more: one
/// message of the largest size, or a spore fetch window (4 chunks of 1 MiB)
/// with replication parts beside it. With `max_peers` (64) this bounds
/// outbound memory, where the count alone allowed 256 messages of 8 MiB.
pub const QUEUE_BYTES_PER_PEER: usize = 8 << 20;

/// Limits and timeouts of [`Streams`]. Zero queue sizes and peer counts
/// are raised to one.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The largest message sent or accepted, in bytes (at most `u32::MAX`).
    pub max_message: usize,
    /// How many peers may have a sender task (and cached connection) at once.
    pub max_peers: usize,
    /// Messages queued per peer before [`Streams::send`] refuses more.
    pub queue_per_peer: usize,
    /// Bytes queued per peer before [`Streams::send`] refuses more (one
    /// message is always admitted into an empty queue).
    pub queue_bytes_per_peer: usize,
    /// Incoming messages buffered before connections stop being read.
    pub incoming_queue: usize,
    /// Incoming bytes buffered before connections stop being read; raised
    /// to `max_message` if smaller.
    pub incoming_bytes: usize,
    /// Limit for a TCP connect, and separately for a TLS handshake (both ways).
    pub connect_timeout: Duration,
    /// An outgoing connection unused this long is closed; an inbound one silent
    /// twice as long too (so normally the sender closes first). Also the limit
    /// for writing or reading one message.
    pub idle_timeout: Duration,
    /// Concurrent inbound connections; more are closed at once.
    pub max_inbound: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_message: 8 << 20,
            max_peers: 64,
            // 100 ms of small messages at 10k/s (a publish stream): 256
            // overflowed whenever a loaded machine held the peer task back
            // 25 ms. Memory stays bounded by the byte budget below.
            queue_per_peer: 1024,
            queue_bytes_per_peer: QUEUE_BYTES_PER_PEER,
            incoming_queue: 1024,
            incoming_bytes: INCOMING_BYTES,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_inbound: 256,
        }
    }
}
