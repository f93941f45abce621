//! Why streams refuse to start, or refuse a message.

use std::io;
use std::net::SocketAddr;

/// Why streams could not start or take new keys.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The TCP port could not be bound.
    #[error(
        "binding TCP {addr} for streams: {source} (streams use the mesh port number over TCP: is another program using it? choose another port with --bind)"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The key list was empty.
    #[error("no cluster key given: pass the key ring's keys, primary first")]
    NoKey,
    /// rcgen refused to build a certificate.
    #[error("building the stream certificates failed: {0} (a bug in myco: please report it)")]
    Certificate(#[from] rcgen::Error),
    /// The operating system gave no randomness for a fresh key.
    #[error("the system's random source failed: {0}; check /dev/urandom and the getrandom syscall")]
    Random(String),
    /// rustls refused a configuration.
    #[error("building the TLS configuration failed: {0} (a bug in myco: please report it)")]
    Tls(#[from] rustls::Error),
    /// rustls refused the trust anchors.
    #[error("building the certificate verifier failed: {0} (a bug in myco: please report it)")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Why [`Streams::send`] refused a message (it is dropped and counted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The message is larger than `max_message`.
    #[error(
        "a message of {size} bytes is over the {max}-byte limit: split it, or raise max_message on every node"
    )]
    TooLarge {
        /// The message size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The peer's queue is full, by count or by bytes: it is slow,
    /// unreachable or backing off.
    #[error(
        "the queue to {to} is full (the peer is slow or unreachable): the message was dropped; send less often or rely on anti-entropy"
    )]
    QueueFull {
        /// The peer's address.
        to: SocketAddr,
    },
    /// The peer's last connection attempt failed and its back-off has
    /// not ended ([`super::Streams::send_if_reachable`] only).
    #[error(
        "{to} refused or did not answer the last connection attempt: the message was not queued; ask another node, or retry after the back-off"
    )]
    Unreachable {
        /// The peer's address.
        to: SocketAddr,
    },
}
