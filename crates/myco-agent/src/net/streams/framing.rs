//! The bytes of a stream connection: the server's acceptance byte, then
//! per message a 4-byte big-endian payload length, one channel byte
//! ([`Channel`]) and the payload. The length is checked before anything is
//! allocated; the channel byte is checked by the reader's caller, so an
//! unknown one costs that message only, never the connection.

use std::io;
use std::time::Duration;

use myco_proto::channel::Channel;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::StreamConfig;

/// The stream protocol version, sent by the server once the handshake is
/// done. 2: every message carries a channel byte after its length.
pub(super) const PROTOCOL: u8 = 2;
/// Messages up to this size are written with their header in one TLS
/// record, and gathered with others queued behind them into one write.
pub(super) const SMALL: usize = 16 * 1024;

/// The error of an operation that ran out of time.
pub(super) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// Writes the length prefix, the channel byte and the message.
pub(super) async fn write_frame(
    stream: &mut (impl AsyncWrite + Unpin),
    channel: Channel,
    message: &[u8],
) -> io::Result<()> {
    // `send` refused anything over max_message, which is at most u32::MAX.
    let len = (message.len() as u32).to_be_bytes();
    let header = [len[0], len[1], len[2], len[3], channel.byte()];
    if message.len() <= SMALL {
        // One write, so one TLS record rather than a 5-byte one per message.
        let mut frame = Vec::with_capacity(header.len() + message.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(message);
        stream.write_all(&frame).await
    } else {
        stream.write_all(&header).await?;
        stream.write_all(message).await
    }
}

/// Appends one small message's frame (length, channel byte, payload) to
/// a batch written at once: a burst costs one write and a few TLS records
/// rather than one of each per message.
pub(super) fn append_frame(batch: &mut Vec<u8>, channel: Channel, message: &[u8]) {
    batch.extend_from_slice(&(message.len() as u32).to_be_bytes());
    batch.push(channel.byte());
    batch.extend_from_slice(message);
}

/// What [`read_frame`] found.
pub(super) enum Frame {
    /// A message and its channel byte (not checked here).
    Message(u8, Vec<u8>),
    /// A clean close, or silence past the caller's limit, between messages.
    End,
    /// A length prefix over `max_message`, refused before allocating.
    Oversize(usize),
}

/// Reads one message. The length is checked before anything is allocated.
/// Silence before a message for `idle` (when given) ends the connection
/// quietly; a message begun must finish within the idle timeout.
pub(super) async fn read_frame(
    stream: &mut (dyn AsyncRead + Unpin + Send),
    config: &StreamConfig,
    idle: Option<Duration>,
) -> io::Result<Frame> {
    let mut header = [0u8; 5];
    let read = match idle {
        Some(idle) => match timeout(idle, stream.read_exact(&mut header)).await {
            Err(_) => return Ok(Frame::End), // the sender forgot us: close quietly
            Ok(read) => read,
        },
        None => stream.read_exact(&mut header).await,
    };
    match read {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Frame::End),
        result => result?,
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > config.max_message {
        return Ok(Frame::Oversize(len));
    }
    let mut message = vec![0; len];
    timeout(config.idle_timeout, stream.read_exact(&mut message))
        .await
        .unwrap_or_else(|_| Err(timed_out()))?;
    Ok(Frame::Message(header[4], message))
}
