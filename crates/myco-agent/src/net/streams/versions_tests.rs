//! The stream handshake agrees on a version (ALPN), as a rolling upgrade
//! needs: a newer build talks to this one at this one's version, and two
//! builds without a version in common are refused in the handshake.

use std::sync::Arc;

use myco_proto::compat::{self, Range, THIS_BUILD};
use myco_proto::{ClusterKey, NodeId};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use super::tls::{self, Tls, leaf_key};

fn node_tls(n: u64) -> Tls {
    let key = ClusterKey::from_bytes([9; 32]);
    Tls::new(&[key], &leaf_key().unwrap(), NodeId::from_u64(n)).unwrap()
}

/// This build's config, speaking `range` instead of its own.
fn speaking(config: &Arc<ClientConfig>, range: Range) -> Arc<ClientConfig> {
    let mut c = (**config).clone();
    c.alpn_protocols = compat::stream_alpns(range);
    Arc::new(c)
}

fn serving(config: &Arc<ServerConfig>, range: Range) -> Arc<ServerConfig> {
    let mut c = (**config).clone();
    c.alpn_protocols = compat::stream_alpns(range);
    Arc::new(c)
}

/// Runs a handshake in memory; the agreed stream version, or the error.
fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<u8, String> {
    let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
    let mut c = ClientConnection::new(client, name).map_err(|e| e.to_string())?;
    let mut s = ServerConnection::new(server).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        s.read_tls(&mut wire.as_slice()).unwrap();
        s.process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut wire = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        c.read_tls(&mut wire.as_slice()).unwrap();
        c.process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !c.is_handshaking() && !s.is_handshaking() {
            let agreed = c.alpn_protocol().map(<[u8]>::to_vec);
            assert_eq!(agreed.as_deref(), s.alpn_protocol(), "both ends agree");
            return compat::stream_version_of(&agreed.unwrap_or_default())
                .ok_or_else(|| "no version agreed".to_string());
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn two_nodes_of_this_build_agree_on_its_stream_version() {
    let (a, b) = (node_tls(1), node_tls(2));
    assert_eq!(
        handshake(a.client.clone(), b.server.clone()),
        Ok(THIS_BUILD.stream.max)
    );
}

#[test]
fn a_newer_build_talks_to_this_one_at_this_ones_version() {
    let (a, b) = (node_tls(1), node_tls(2));
    let now = THIS_BUILD.stream.max;
    let next = Range {
        min: now,
        max: now + 1,
    };
    // The newer node dials, or is dialled: either way this build's version.
    assert_eq!(
        handshake(speaking(&a.client, next), b.server.clone()),
        Ok(now)
    );
    assert_eq!(
        handshake(a.client.clone(), serving(&b.server, next)),
        Ok(now)
    );
    // Two newer nodes use the newer version.
    assert_eq!(
        handshake(speaking(&a.client, next), serving(&b.server, next)),
        Ok(now + 1)
    );
}

#[test]
fn builds_with_no_version_in_common_are_refused_in_the_handshake() {
    let (a, b) = (node_tls(1), node_tls(2));
    let ancient = Range::only(THIS_BUILD.stream.min - 1);
    let refused = handshake(speaking(&a.client, ancient), b.server.clone());
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("doesn't support any known protocol")),
        "{refused:?}"
    );
}
