//! The receiving side: accept within the connection limit, handshake,
//! send the acceptance byte, then read messages into the [`Inbox`] until
//! the peer closes, idles, misbehaves or loses our trust.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myco_proto::channel::Channel;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::framing::{Frame, PROTOCOL, read_frame, timed_out};
use super::queue::InboxSender;
use super::{Incoming, Shared, bump, tls};

/// Accepts connections while the incoming receiver lives.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, incoming: InboxSender) {
    let slots = Arc::new(Semaphore::new(shared.config.max_inbound));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(serve(shared.clone(), tcp, from, incoming.clone(), slot));
                    }
                    Err(_) => {
                        bump(&shared.stats.inbound_refused, 1);
                        tracing::debug!(%from, "too many inbound stream connections, closing");
                    }
                },
                Err(error) => {
                    // Typically out of file descriptors: pause rather than spin.
                    tracing::debug!(%error, "stream accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = incoming.closed() => return,
        }
    }
}

/// Serves one inbound connection: handshake, then read messages until the
/// peer closes, idles, misbehaves or loses our trust.
async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    from: SocketAddr,
    incoming: InboxSender,
    _slot: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    // Before the configs are taken: a key change from here on is seen.
    let keys = super::KeyWatch::new(&shared);
    let (mut generation, tls) = shared.tls();
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        let mut stream = TlsAcceptor::from(tls.server.clone()).accept(tcp).await?;
        if stream.get_ref().1.alpn_protocol() == Some(tls::RELAY_ALPN) {
            // The edge relay speaks HTTP/2 from here: no acceptance byte.
            return Ok(Err(stream));
        }
        stream.write_all(&[PROTOCOL]).await?;
        stream.flush().await?;
        Ok::<_, io::Error>(Ok(stream))
    };
    let mut stream = match timeout(config.connect_timeout, handshake).await {
        Ok(Ok(Ok(stream))) => stream,
        Ok(Ok(Err(relay))) => {
            match shared.relay.get() {
                Some(serve_relay) => {
                    let chain = relay.get_ref().1.peer_certificates().map(<[_]>::to_vec);
                    // Dropping the served connection closes it.
                    tokio::select! {
                        () = serve_relay(relay, from) => {}
                        () = keys.client_untrusted(chain.unwrap_or_default()) => {
                            tracing::debug!(%from, "edge relay connection closed: its peer is not trusted after a key change");
                        }
                    }
                }
                None => {
                    bump(&shared.stats.inbound_handshake_failures, 1);
                    tracing::debug!(%from, "edge relay connection refused: no edge here");
                }
            }
            return;
        }
        result => {
            let error = result.unwrap_or_else(|_| Err(timed_out())).err();
            bump(&shared.stats.inbound_handshake_failures, 1);
            if error.as_ref().is_some_and(tls::no_common_version) {
                let ours = myco_proto::compat::THIS_BUILD.stream;
                tracing::warn!(%from, "a node at {from} speaks no stream version this build speaks ({ours}): upgrade the older of the two");
            } else {
                tracing::debug!(%from, error = ?error, "inbound stream handshake refused");
            }
            return;
        }
    };
    let certs = stream.get_ref().1.peer_certificates();
    let peer = certs.and_then(|c| c.first()).and_then(|c| tls::node_of(c));
    tracing::debug!(%from, peer = ?peer, "inbound stream connection open");
    let result = loop {
        let (channel, message) = match read_frame(&mut stream, config).await {
            Ok(Frame::Message(channel, message)) => (channel, message),
            Ok(Frame::End) => break Ok(()),
            Ok(Frame::Oversize(len)) => {
                bump(&shared.stats.oversize_refused, 1);
                let max = config.max_message;
                let msg = format!("length prefix {len} is over max_message {max}");
                break Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            Err(error) => break Err(error),
        };
        let (now, tls) = shared.tls();
        if now != generation {
            if !tls.trusts_client(stream.get_ref().1.peer_certificates()) {
                bump(&shared.stats.untrusted_after_rekey, 1);
                break Err(io::Error::other("peer not trusted after a key change"));
            }
            generation = now;
        }
        let Some(channel) = Channel::from_byte(channel) else {
            // From a newer build, or garbage: this message only is lost.
            bump(&shared.stats.unknown_channel, 1);
            tracing::debug!(%from, channel, "stream message on an unknown channel dropped");
            continue;
        };
        let size = message.len() as u64;
        let handler = shared
            .handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, h)| h.clone());
        if let Some(handle) = handler {
            bump(&shared.stats.received_messages, 1);
            bump(&shared.stats.received_bytes, size);
            handle(message);
            continue;
        }
        let item = Incoming {
            from,
            peer,
            channel,
            message,
        };
        // Waiting here is the backpressure: this connection is not read
        // while the consumer is behind (by count or by bytes).
        let waiting = || bump(&shared.stats.incoming_waits, 1);
        if incoming.send(item, waiting).await.is_err() {
            break Ok(());
        }
        bump(&shared.stats.received_messages, 1);
        bump(&shared.stats.received_bytes, size);
    };
    match result {
        Ok(()) => {
            let _ = timeout(config.connect_timeout, stream.shutdown()).await;
            tracing::debug!(%from, "inbound stream connection closed");
        }
        Err(error) => {
            tracing::debug!(%from, %error, "inbound stream connection dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    //! Refusals that need a hand-made client; the rest is in tests/streams.rs.

    use std::net::SocketAddr;

    use myco_proto::{ClusterKey, NodeId};
    use rustls::pki_types::ServerName;
    use tokio::io::AsyncReadExt;
    use tokio::time::Instant;
    use tokio_rustls::{TlsConnector, client};

    use super::super::framing::write_frame;
    use super::super::{Inbox, StreamConfig, StreamStats, Streams};
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    fn member_tls() -> tls::Tls {
        let leaf_key = tls::leaf_key().unwrap();
        tls::Tls::new(&[key(1)], &leaf_key, NodeId::from_u64(9)).unwrap()
    }

    async fn server() -> (Streams, Inbox) {
        let any = "127.0.0.1:0".parse().unwrap();
        let node = NodeId::from_u64(1);
        Streams::bind(any, &[key(1)], node, StreamConfig::default())
            .await
            .unwrap()
    }

    async fn until(streams: &Streams, what: &str, done: impl Fn(&StreamStats) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&streams.stats()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                streams.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a connection as a member would, up to the server's version byte.
    async fn connect_as(
        config: Arc<rustls::ClientConfig>,
        to: SocketAddr,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(to).await?;
        let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
        let mut stream = TlsConnector::from(config).connect(name, tcp).await?;
        let mut version = [0u8; 1];
        stream.read_exact(&mut version).await?;
        assert_eq!(version[0], PROTOCOL);
        Ok(stream)
    }

    async fn send_frame(stream: &mut client::TlsStream<TcpStream>, message: &[u8]) {
        write_frame(stream, Channel::Sync, message).await.unwrap();
        stream.flush().await.unwrap();
    }

    #[tokio::test]
    async fn an_oversize_length_prefix_is_refused_before_allocating() {
        let (a, mut rx) = server().await;
        let mut stream = connect_as(member_tls().client, a.local_addr())
            .await
            .unwrap();
        send_frame(&mut stream, b"ok").await;
        assert_eq!(
            timeout(WAIT, rx.recv()).await.unwrap().unwrap().message,
            b"ok"
        );

        stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        stream.write_all(&[Channel::Sync.byte()]).await.unwrap();
        stream.flush().await.unwrap();
        // The server closes at once. Had it allocated 4 GiB and waited for
        // them, this read would only end at the 60 s idle timeout.
        let mut rest = Vec::new();
        let closed = timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection stayed open");
        until(&a, "the oversize refusal", |s| s.oversize_refused == 1).await;
        assert_eq!(a.stats().received_messages, 1);
    }

    #[tokio::test]
    async fn a_tls_client_without_a_certificate_is_refused() {
        let (a, mut rx) = server().await;
        // In TLS 1.3 the client finishes first; the refusal shows as no version byte.
        let refused = connect_as(member_tls().client_without_cert(), a.local_addr());
        assert!(timeout(WAIT, refused).await.unwrap().is_err());
        until(&a, "the refusal", |s| s.inbound_handshake_failures == 1).await;

        // The server keeps serving members.
        let mut stream = connect_as(member_tls().client, a.local_addr())
            .await
            .unwrap();
        send_frame(&mut stream, b"hi").await;
        let got = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        assert_eq!(
            (got.message, got.peer),
            (b"hi".to_vec(), Some(NodeId::from_u64(9)))
        );
    }

    #[tokio::test]
    async fn an_unknown_channel_is_counted_and_dropped_not_fatal() {
        let (a, mut rx) = server().await;
        let mut stream = connect_as(member_tls().client, a.local_addr())
            .await
            .unwrap();
        // Length 3, channel 0xEE (no such channel), then a good message on
        // the same connection.
        stream
            .write_all(&[0, 0, 0, 3, 0xEE, 1, 2, 3])
            .await
            .unwrap();
        send_frame(&mut stream, b"after").await;
        let got = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        assert_eq!(
            (got.channel, got.message),
            (Channel::Sync, b"after".to_vec())
        );
        assert_eq!(a.stats().unknown_channel, 1);
        assert_eq!(a.stats().received_messages, 1);
    }
}
