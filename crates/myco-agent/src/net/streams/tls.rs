//! Certificates and TLS configs for streams, all derived from the cluster keys.
//!
//! Each cluster key deterministically yields a CA: its Ed25519 key comes from
//! HKDF (`myco ca v1`) and every field of its certificate is fixed, so every
//! node builds a byte-identical copy without any CA file to distribute. A
//! node makes one fresh, in-memory key pair and, over it, one leaf per key
//! in its ring, each signed by that key's CA; it trusts the CAs of every key
//! in its ring.
//!
//! Which leaf to present: both sides of a TLS 1.3 handshake name the CAs
//! they trust (the client in ClientHello's `certificate_authorities`, the
//! server in its CertificateRequest), and a node presents the leaf of the
//! first key of its ring (primary first) that the peer trusts. So two nodes
//! can talk, both ways, exactly while their rings share a key, whichever is
//! primary on each: the same rule as for datagrams' "seal with the primary,
//! open with any", minus its one-way gaps. A single primary-signed leaf
//! would not do: a node that has moved its primary to a new key could then
//! neither reach nor be reached by a node that only knows the old key.
//!
//! Validity window: leaves and CAs are valid from 1970 to 4096. A Raspberry
//! Pi without a real-time clock may run with a wrong date until NTP syncs,
//! and webpki checks dates against the local clock; a short window would make
//! such a node refuse (and be refused by) everyone. Expiry would buy nothing
//! here: leaves live only as long as the process, and trust is withdrawn by
//! removing a cluster key from the ring, which drops its CA as an anchor.
//! We keep webpki's standard checks rather than a custom verifier or a fake
//! time provider, so there is no hand-written verification code to get wrong.

use std::sync::Arc;

use myco_proto::{ClusterKey, NodeId};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use super::StreamError;
pub(super) use super::crypto::Ed25519Key;
use super::crypto::provider;

/// The DNS name every leaf carries and every client checks: membership in
/// the cluster is the identity that matters, not which node answered.
pub(super) const SERVER_NAME: &str = "myco";

/// ALPN names for the stream versions this build speaks, newest first:
/// the handshake agrees on the highest version both ends speak, and two
/// builds with no version in common fail it (see `myco_proto::compat`).
fn alpn() -> Vec<Vec<u8>> {
    myco_proto::compat::stream_alpns(myco_proto::compat::THIS_BUILD.stream)
}

/// Whether a handshake failed because the two builds share no stream
/// version: an operator must upgrade the older node, so it is worth a
/// warning of its own rather than a generic handshake failure.
pub(super) fn no_common_version(error: &std::io::Error) -> bool {
    use rustls::{AlertDescription, Error};
    matches!(
        error.get_ref().and_then(|e| e.downcast_ref::<Error>()),
        Some(
            Error::NoApplicationProtocol
                | Error::AlertReceived(AlertDescription::NoApplicationProtocol)
        )
    )
}
/// ALPN of the edge relay: HTTP/2 between nodes' edges on the same
/// listener and certificates (see `edge::relay`).
pub const RELAY_ALPN: &[u8] = b"myco-edge-h2/1";

/// The fixed, wide validity window (see the module docs for why).
fn set_validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(1970, 1, 1);
    params.not_after = rcgen::date_time_ymd(4096, 1, 1);
}

/// A cluster key's CA: its self-signed certificate and an issuer to sign leaves.
pub(super) struct Ca {
    pub(super) cert: CertificateDer<'static>,
    issuer: Issuer<'static, Ed25519Key>,
}

impl Ca {
    /// Derives the CA of `key`. Deterministic: the key comes from HKDF, the
    /// serial and dates are fixed and Ed25519 signatures are deterministic,
    /// so any two nodes build the same certificate, byte for byte.
    pub(super) fn derive(key: &ClusterKey) -> Result<Ca, rcgen::Error> {
        let mut seed = [0u8; 32];
        key.derive(b"myco ca v1", &mut seed);
        let signing_key = Ed25519Key::from_seed(&seed);
        let mut params = CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(DnType::OrganizationName, "myco");
        dn.push(DnType::CommonName, format!("myco cluster CA {}", key.id()));
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&key.id().0));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.key_identifier_method = KeyIdMethod::PreSpecified(signing_key.id());
        set_validity(&mut params);
        let cert = params.self_signed(&signing_key)?.der().clone();
        Ok(Ca {
            cert,
            issuer: Issuer::new(params, signing_key),
        })
    }

    /// Signs a leaf for `node` over `leaf_key`'s public key. Both SANs are
    /// DNS names: "myco", which clients check, and "<node id>.myco", which
    /// tells a server who connected (see [`node_of`]).
    pub(super) fn sign_leaf(
        &self,
        leaf_key: &Ed25519Key,
        node: NodeId,
    ) -> Result<CertificateDer<'static>, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(DnType::CommonName, format!("myco node {node}"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::DnsName(SERVER_NAME.try_into()?),
            SanType::DnsName(format!("{node}.{SERVER_NAME}").try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Every node is both a server and a client of its peers.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        set_validity(&mut params);
        // A hash of the (fresh) leaf public key, as rcgen's default.
        params.serial_number = Some(leaf_key.default_serial());
        params.key_identifier_method = KeyIdMethod::PreSpecified(leaf_key.id());
        Ok(params.signed_by(leaf_key, &self.issuer)?.der().clone())
    }
}

/// A fresh leaf key pair, made once per process and never written to disk.
pub(super) fn leaf_key() -> Result<Ed25519Key, StreamError> {
    Ed25519Key::generate().map_err(|e| StreamError::Random(e.to_string()))
}

/// The node id in a leaf's "<node id>.myco" SAN, found by a byte scan
/// rather than a full X.509 parse (no parser among our dependencies). Only
/// called on certificates that already verified, so the content comes from a
/// holder of a cluster key; a false match in other fields would need 23
/// exact bytes to line up and would at worst mislabel a trusted peer.
pub(super) fn node_of(cert: &[u8]) -> Option<NodeId> {
    // GeneralName dNSName is context tag [2] (0x82), here of 16 hex digits + ".myco".
    const LEN: usize = 16 + 1 + SERVER_NAME.len();
    cert.windows(2 + LEN).find_map(|w| {
        let name = &w[2..];
        if w[0] != 0x82 || usize::from(w[1]) != LEN || &name[16..] != b".myco" {
            return None;
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(&name[..16], &mut id).ok()?;
        Some(NodeId(id))
    })
}

/// The TLS configs of one key ring, plus the verifiers to re-check live
/// connections against after a rotation.
pub(super) struct Tls {
    pub(super) client: Arc<ClientConfig>,
    /// The client config of the edge relay: the same trust and leaves,
    /// offering [`RELAY_ALPN`] only.
    pub(super) relay_client: Arc<ClientConfig>,
    pub(super) server: Arc<ServerConfig>,
    server_verifier: Arc<HintingVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl Tls {
    /// Builds configs for `keys` (primary first): a leaf over `leaf_key`
    /// signed by each key's CA, and the CAs of all keys trusted.
    pub(super) fn new(
        keys: &[ClusterKey],
        leaf_key: &Ed25519Key,
        node: NodeId,
    ) -> Result<Tls, StreamError> {
        if keys.is_empty() {
            return Err(StreamError::NoKey);
        }
        let mut anchors = Vec::new();
        let mut leaves = Vec::new();
        for key in keys {
            let ca = Ca::derive(key)?;
            leaves.push((ca.cert.clone(), ca.sign_leaf(leaf_key, node)?));
            anchors.push(ca.cert);
        }
        Tls::build(anchors, leaves, leaf_key)
    }

    /// Builds configs trusting `anchors` and presenting `leaves`, each given
    /// with the CA certificate that signed it, in order of preference.
    fn build(
        anchors: Vec<CertificateDer<'static>>,
        leaves: Vec<(CertificateDer<'static>, CertificateDer<'static>)>,
        leaf_key: &Ed25519Key,
    ) -> Result<Tls, StreamError> {
        let mut roots = RootCertStore::empty();
        for ca in anchors {
            roots.add(ca)?;
        }
        let hints = roots.subjects();
        let roots = Arc::new(roots);
        let mut certified = Vec::new();
        for (ca, leaf) in leaves {
            let private = PrivateKeyDer::Pkcs8(leaf_key.pkcs8().into());
            let key = CertifiedKey::from_der(vec![leaf], private, &provider())?;
            certified.push((subject_of(ca)?, Arc::new(key)));
        }
        let leaves = Arc::new(Leaves(certified));

        let server_verifier = Arc::new(HintingVerifier {
            inner: WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()?,
            hints,
        });
        // It names our CAs in its CertificateRequest by default.
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;

        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier.clone())
            .with_client_cert_resolver(leaves.clone());
        // No resumption: every connection is a full mutual handshake, so the
        // peer's certificate is always at hand to re-verify after a rotation,
        // and no ticket outlives the keys it was issued under.
        client.resumption = rustls::client::Resumption::disabled();
        let mut relay_client = client.clone();
        relay_client.alpn_protocols = vec![RELAY_ALPN.to_vec()];
        client.alpn_protocols = alpn();

        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(client_verifier.clone())
            .with_cert_resolver(leaves);
        server.send_tls13_tickets = 0;
        // The stream versions, newest first, then the relay. A client that
        // offers no ALPN gets the stream protocol (as before the relay).
        let mut names = alpn();
        names.push(RELAY_ALPN.to_vec());
        server.alpn_protocols = names;

        Ok(Tls {
            client: Arc::new(client),
            relay_client: Arc::new(relay_client),
            server: Arc::new(server),
            server_verifier,
            client_verifier,
        })
    }

    /// A client config trusting this ring but presenting no certificate.
    #[cfg(test)]
    pub(super) fn client_without_cert(&self) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 is supported")
            .dangerous()
            .with_custom_certificate_verifier(self.server_verifier.clone())
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Whether a server chain accepted earlier is still trusted by this ring.
    pub(super) fn trusts_server(&self, chain: Option<&[CertificateDer<'static>]>) -> bool {
        let Some((leaf, rest)) = chain.and_then(<[_]>::split_first) else {
            return false;
        };
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        self.server_verifier
            .verify_server_cert(leaf, rest, &name, &[], UnixTime::now())
            .is_ok()
    }

    /// Whether a client chain accepted earlier is still trusted by this ring.
    pub(super) fn trusts_client(&self, chain: Option<&[CertificateDer<'static>]>) -> bool {
        let Some((leaf, rest)) = chain.and_then(<[_]>::split_first) else {
            return false;
        };
        self.client_verifier
            .verify_client_cert(leaf, rest, UnixTime::now())
            .is_ok()
    }
}

/// A CA's subject as rustls writes it in `certificate_authorities` hints.
fn subject_of(ca: CertificateDer<'static>) -> Result<DistinguishedName, rustls::Error> {
    let mut one = RootCertStore::empty();
    one.add(ca)?;
    Ok(one.subjects().remove(0))
}

/// This node's leaves, each with the subject of the CA that signed it,
/// primary first.
#[derive(Debug)]
struct Leaves(Vec<(DistinguishedName, Arc<CertifiedKey>)>);

impl Leaves {
    /// The first leaf whose CA the peer trusts; the primary's if none is (or
    /// the peer named none), so the peer refuses it with a clear error.
    fn pick(&self, trusted: impl Fn(&[u8]) -> bool) -> Arc<CertifiedKey> {
        let (_, leaf) = (self.0.iter())
            .find(|(ca, _)| trusted(ca.as_ref()))
            .unwrap_or(&self.0[0]);
        leaf.clone()
    }
}

impl ResolvesServerCert for Leaves {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cas = hello.certificate_authorities().unwrap_or_default();
        Some(self.pick(|ca| cas.iter().any(|c| c.as_ref() == ca)))
    }
}

impl ResolvesClientCert for Leaves {
    fn resolve(&self, hints: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(|ca| hints.contains(&ca)))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// webpki's server verifier, plus the names of our CAs for the ClientHello
/// (webpki's own sends none), so the server can pick a leaf we trust.
#[derive(Debug)]
struct HintingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    hints: Vec<DistinguishedName>,
}

impl ServerCertVerifier for HintingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        (self.inner).verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        Some(&self.hints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    /// Each node derives its own CA copy; a leaf signed by one copy must
    /// verify against another copy as the trust anchor, in both roles.
    #[test]
    fn independent_ca_copies_verify_each_others_leaves() {
        let node = NodeId::from_u64(7);
        let copy_a = Ca::derive(&key(1)).unwrap();
        let copy_b = Ca::derive(&key(1)).unwrap();
        // By construction the copies are byte-identical (deterministic fields
        // and signature); this is stronger than what webpki needs.
        assert_eq!(copy_a.cert, copy_b.cert);
        let leaf_key = leaf_key().unwrap();
        let leaf = vec![copy_a.sign_leaf(&leaf_key, node).unwrap()];

        // A node that derived only copy B, as its anchor and for its own leaf.
        let own = copy_b.sign_leaf(&leaf_key, node).unwrap();
        let anchors = vec![copy_b.cert.clone()];
        let tls = Tls::build(anchors, vec![(copy_b.cert.clone(), own)], &leaf_key).unwrap();
        assert!(tls.trusts_server(Some(&leaf)));
        assert!(tls.trusts_client(Some(&leaf)));

        // And a different key's CA does not.
        let other = Tls::new(&[key(2)], &leaf_key, node).unwrap();
        assert!(!other.trusts_server(Some(&leaf)));
        assert!(!other.trusts_client(Some(&leaf)));
        assert!(!other.trusts_client(None));
    }

    #[test]
    fn ca_differs_per_key_and_node_id_is_read_back() {
        assert_ne!(
            Ca::derive(&key(1)).unwrap().cert,
            Ca::derive(&key(2)).unwrap().cert
        );
        let node = NodeId::from_u64(0x0123_4567_89ab_cdef);
        let leaf = Ca::derive(&key(1))
            .unwrap()
            .sign_leaf(&leaf_key().unwrap(), node)
            .unwrap();
        assert_eq!(node_of(&leaf), Some(node));
        assert_eq!(node_of(b"no names in here"), None);
    }

    #[test]
    fn the_leaf_of_the_first_key_the_peer_trusts_is_presented() {
        let node = NodeId::from_u64(1);
        let lk = leaf_key().unwrap();
        let subject = |n| subject_of(Ca::derive(&key(n)).unwrap().cert).unwrap();
        let (k1, k2, k3) = (subject(1), subject(2), subject(3));
        let leaves = Leaves(
            [(k2.clone(), 2), (k1.clone(), 1)]
                .into_iter()
                .map(|(ca, n)| {
                    let leaf = Ca::derive(&key(n)).unwrap().sign_leaf(&lk, node).unwrap();
                    let private = PrivateKeyDer::Pkcs8(lk.pkcs8().into());
                    let ck = CertifiedKey::from_der(vec![leaf], private, &provider()).unwrap();
                    (ca, Arc::new(ck))
                })
                .collect(),
        );
        let picked = |hints: &[&[u8]]| {
            let ck = ResolvesClientCert::resolve(&leaves, hints, &[]).unwrap();
            let only_k1 = Tls::new(&[key(1)], &lk, node).unwrap();
            if only_k1.trusts_client(Some(&ck.cert)) {
                1
            } else {
                2
            }
        };
        assert_eq!(picked(&[k1.as_ref()]), 1);
        assert_eq!(picked(&[k1.as_ref(), k2.as_ref()]), 2, "primary preferred");
        assert_eq!(picked(&[k3.as_ref()]), 2, "primary when none is trusted");
        assert_eq!(picked(&[]), 2);
        assert!(matches!(Tls::new(&[], &lk, node), Err(StreamError::NoKey)));
    }

    /// The CA and a leaf over a fixed key are byte for byte those of the
    /// first release (rcgen with ring's crypto): the CA is every node's
    /// trust anchor, derived on each, and must not change under a mesh
    /// being upgraded one node at a time.
    #[test]
    fn certificates_are_those_of_the_first_release() {
        let ca = Ca::derive(&key(1)).unwrap();
        let leaf = ca
            .sign_leaf(&Ed25519Key::from_seed(&[9; 32]), NodeId::from_u64(5))
            .unwrap();
        assert_eq!(
            hex::encode(ca.cert.as_ref()),
            include_str!("fixtures/ca.hex").trim()
        );
        assert_eq!(
            hex::encode(leaf.as_ref()),
            include_str!("fixtures/leaf.hex").trim()
        );
    }
}
