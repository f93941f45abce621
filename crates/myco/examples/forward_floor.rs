//! The floor a forwarded cache GET is held to: a plain TCP forwarder on
//! tokio, as the agent runs, with nothing between its read and its write
//! (no TLS, no framing, no lookup). `bench/cache.sh` (step `rtt` with
//! `FLOOR=1`) puts it, nginx's stream proxy and haproxy in front of
//! redis-server, so a myco forward's added time (remote GET − local GET)
//! can be read against a bare forward's (via the proxy − direct), both
//! measured in the same run.
//!
//! ```sh
//! cargo build --release -p myco --example forward_floor
//! target/release/examples/forward_floor LISTEN UPSTREAM [--one-thread]
//!     [--tls-in DIR | --tls-out DIR]
//! ```
//!
//! Each client connection gets its own upstream connection; bytes are
//! copied both ways as they come. `--one-thread` runs tokio's
//! current-thread scheduler instead of two workers.
//!
//! Two of them chained put a hop between them, as a forwarded GET has one
//! between the asked node and the owner; `--tls-out DIR` on the first and
//! `--tls-in DIR` on the second make that hop TLS 1.3 (rustls, ring,
//! AES-256-GCM first, as the agents' streams), so the chain against a
//! plain one is what the encryption of the hop costs
//! (`bench/tls_floor.sh`). DIR holds `cert.der` and `key.der` (PKCS#8),
//! a self-signed certificate for the name `floor`.

use std::net::SocketAddr;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Which side of the hop, if either, speaks TLS.
#[derive(Clone)]
enum Tls {
    None,
    In(TlsAcceptor),
    Out(TlsConnector),
}

fn tls(args: &[String]) -> Tls {
    let dir = |flag: &str| {
        let i = args.iter().position(|a| a == flag)?;
        Some(std::path::PathBuf::from(
            args.get(i + 1).expect("a directory"),
        ))
    };
    let read =
        |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).expect("cert.der and key.der");
    if let Some(d) = dir("--tls-in") {
        let cert = CertificateDer::from(read(&d, "cert.der"));
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read(&d, "key.der")));
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("a usable certificate");
        return Tls::In(TlsAcceptor::from(Arc::new(config)));
    }
    if let Some(d) = dir("--tls-out") {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(read(&d, "cert.der")))
            .expect("a usable certificate");
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        return Tls::Out(TlsConnector::from(Arc::new(config)));
    }
    Tls::None
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: forward_floor LISTEN UPSTREAM [--one-thread]");
        std::process::exit(2);
    }
    let addr = |s: &str| {
        s.parse::<SocketAddr>()
            .expect("an address such as 127.0.0.1:6380")
    };
    let (listen, upstream) = (addr(&args[1]), addr(&args[2]));
    let runtime = if args.iter().any(|a| a == "--one-thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("a tokio runtime");
    let tls = tls(&args);
    runtime.block_on(serve(listen, upstream, tls));
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, tls: Tls) {
    let listener = TcpListener::bind(listen).await.expect("bind LISTEN");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            match tls {
                Tls::None => pump(client, server).await,
                Tls::In(acceptor) => match acceptor.accept(client).await {
                    Ok(client) => pump(client, server).await,
                    Err(e) => eprintln!("forward_floor: TLS accept: {e}"),
                },
                Tls::Out(connector) => {
                    let name = ServerName::try_from("floor").expect("a DNS name");
                    match connector.connect(name, server).await {
                        Ok(server) => pump(client, server).await,
                        Err(e) => eprintln!("forward_floor: TLS connect: {e}"),
                    }
                }
            }
        });
    }
}

/// Copies both ways until either side closes.
async fn pump<C, S>(client: C, server: S)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = tokio::io::split(server);
    let up = tokio::spawn(copy(client_read, server_write));
    copy(server_read, client_write).await;
    let _ = up.await;
}

/// Copies until either side closes: one read, then one write of what it read.
async fn copy(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            return;
        }
    }
}
