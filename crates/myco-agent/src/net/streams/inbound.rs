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

use super::back::Back;
use super::framing::{Frame, PROTOCOL, read_frame, timed_out};
use super::queue::InboxClosed;
use super::{Incoming, Shared, bump, tls};

/// Accepts connections while the incoming receiver lives.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_inbound));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(serve(shared.clone(), tcp, from, slot));
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
            () = shared.incoming.closed() => return,
        }
    }
}

/// Serves one inbound connection: handshake, then read messages until the
/// peer closes, idles, misbehaves or loses our trust.
async fn serve(shared: Arc<Shared>, tcp: TcpStream, from: SocketAddr, _slot: OwnedSemaphorePermit) {
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
    // From stream version 4 the client reads answers on this connection.
    let agreed = stream.get_ref().1.alpn_protocol();
    let answers_back = agreed
        .and_then(myco_proto::compat::stream_version_of)
        .is_some_and(|v| v >= myco_proto::compat::STREAM_ANSWERS_BACK);
    tracing::debug!(%from, peer = ?peer, answers_back, "inbound stream connection open");
    let mut back = Back::open(answers_back);
    let result = loop {
        let idle = Some(2 * config.idle_timeout);
        let (channel, message) = match read_frame(&mut stream, config, idle).await {
            Ok(Frame::Message(channel, message)) => (channel, message),
            Ok(Frame::End) => break back.flush_to(&mut stream, &shared).await,
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
            let chain = stream.get_ref().1.peer_certificates();
            if !tls.trusts_client(chain) {
                bump(&shared.stats.untrusted_after_rekey, 1);
                break Err(io::Error::other("peer not trusted after a key change"));
            }
            generation = now;
        }
        // A message for the inbox may wait there: answers go first.
        if back.queued() > 0
            && !shared.handles(channel)
            && let Err(error) = back.flush_to(&mut stream, &shared).await
        {
            break Err(error);
        }
        if dispatch(&shared, from, peer, channel, message, &mut back)
            .await
            .is_err()
        {
            break Ok(());
        }
        // Nothing more read in (TLS holds no more plaintext: the next read
        // may wait), so the answers to everything one read brought go now,
        // in one write.
        let drained = stream.get_ref().1.wants_read();
        if back.queued() > 0
            && (drained || back.queued() >= ANSWERS_BATCH)
            && let Err(error) = back.flush_to(&mut stream, &shared).await
        {
            break Err(error);
        }
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

/// Bytes of answers gathered before they are written even though more
/// requests are already read in.
const ANSWERS_BATCH: usize = 64 * 1024;

/// Hands one received message to its channel's direct handler, with the
/// way back to its sender, or else to the inbox, waiting for room there
/// (which stops the reading connection: backpressure). An unknown channel
/// costs that message only. Fails once the inbox's consumer is gone.
pub(super) async fn dispatch(
    shared: &Shared,
    from: SocketAddr,
    peer: Option<myco_proto::NodeId>,
    channel: u8,
    message: Vec<u8>,
    back: &mut Back,
) -> Result<(), InboxClosed> {
    let Some(channel) = Channel::from_byte(channel) else {
        // From a newer build, or garbage: this message only is lost.
        bump(&shared.stats.unknown_channel, 1);
        tracing::debug!(%from, channel, "stream message on an unknown channel dropped");
        return Ok(());
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
        handle(message, back);
        return Ok(());
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
    shared.incoming.send(item, waiting).await?;
    bump(&shared.stats.received_messages, 1);
    bump(&shared.stats.received_bytes, size);
    Ok(())
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

    /// A handler's answer goes back on the connection its request came in
    /// on when the client speaks stream version 4, gathered into one
    /// write; with a version 3 client the handler is told there is no way
    /// back (and sends the answer its own way).
    #[tokio::test]
    async fn answers_go_back_on_the_asking_connection_from_version_4() {
        let (a, _rx) = server().await;
        let (said, mut heard) = tokio::sync::mpsc::unbounded_channel();
        a.handle_directly(
            Channel::Cache,
            Arc::new(move |m: Vec<u8>, back: &mut Back| {
                let answer = [b"re:".as_slice(), &m].concat();
                let _ = said.send(back.send(Channel::Cache, &answer));
            }),
        );
        let mut stream = connect_as(member_tls().client, a.local_addr())
            .await
            .unwrap();
        let agreed = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(agreed.as_deref(), Some(&b"myco-streams/4"[..]));
        let mut both = Vec::new();
        super::super::framing::append_frame(&mut both, Channel::Cache, b"q1");
        super::super::framing::append_frame(&mut both, Channel::Cache, b"q2");
        stream.write_all(&both).await.unwrap();
        stream.flush().await.unwrap();
        let config = StreamConfig::default();
        for q in [b"q1", b"q2"] {
            let frame = timeout(WAIT, read_frame(&mut stream, &config, None)).await;
            let Ok(Ok(Frame::Message(channel, m))) = frame else {
                panic!("no answer to {q:?}");
            };
            assert_eq!(
                (channel, m),
                (Channel::Cache.byte(), [b"re:", &q[..]].concat())
            );
            assert_eq!(heard.recv().await, Some(true));
        }
        until(&a, "the answers counted", |s| s.answers_back == 2).await;

        let mut three = (*member_tls().client).clone();
        three.alpn_protocols = myco_proto::compat::stream_alpns(myco_proto::compat::Range::only(3));
        let mut old = connect_as(Arc::new(three), a.local_addr()).await.unwrap();
        write_frame(&mut old, Channel::Cache, b"q3").await.unwrap();
        old.flush().await.unwrap();
        assert_eq!(timeout(WAIT, heard.recv()).await.unwrap(), Some(false));
        assert_eq!(a.stats().answers_back, 2);
    }
}
