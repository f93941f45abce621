//! Relay connections after a key rotation. Stream connections re-check
//! their peer before each message (`inbound`, `outbound`); a relay
//! connection is HTTP/2 that the edge drives, and a pooled one may sit idle
//! for a minute, so instead it holds a [`KeyWatch`] that resolves as soon
//! as a new ring no longer trusts the peer, and the connection is closed
//! then (counted in `untrusted_after_rekey`). A ring that still shares a
//! key with the peer keeps the connection.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use super::{Shared, Streams, bump};

/// A watch on the key ring, taken before a relay connection's handshake
/// so that a change during the handshake is seen too.
pub struct KeyWatch {
    shared: Arc<Shared>,
    rx: watch::Receiver<u64>,
}

/// Which end of the connection the watched chain belongs to.
#[derive(Clone, Copy)]
enum Peer {
    /// We connected to it: its chain is a server's.
    Server,
    /// It connected to us.
    Client,
}

impl Streams {
    /// A watch from now on the key ring (see [`KeyWatch::server_untrusted`]).
    pub fn watch_keys(&self) -> KeyWatch {
        KeyWatch::new(&self.owner.shared)
    }
}

impl KeyWatch {
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        KeyWatch {
            shared: shared.clone(),
            rx: shared.rekeyed.subscribe(),
        }
    }

    /// Resolves once a ring set after this watch was taken no longer trusts
    /// `chain`, the certificates of the node we connected to; never while
    /// every new ring still does.
    pub async fn server_untrusted(self, chain: Vec<CertificateDer<'static>>) {
        self.untrusted(chain, Peer::Server).await
    }

    /// The same for a node that connected to us.
    pub(super) async fn client_untrusted(self, chain: Vec<CertificateDer<'static>>) {
        self.untrusted(chain, Peer::Client).await
    }

    async fn untrusted(mut self, chain: Vec<CertificateDer<'static>>, peer: Peer) {
        // The sender lives in `Shared`, which this watch holds: `changed`
        // only fails if it were dropped, and then nothing changes any more.
        while self.rx.changed().await.is_ok() {
            let (_, tls) = self.shared.tls();
            let trusted = match peer {
                Peer::Server => tls.trusts_server(Some(&chain)),
                Peer::Client => tls.trusts_client(Some(&chain)),
            };
            if !trusted {
                bump(&self.shared.stats.untrusted_after_rekey, 1);
                return;
            }
        }
        std::future::pending().await
    }
}
