//! Loopback ports for agents: free for both TCP and UDP, never handed out
//! twice per test process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Ports are taken from 20000..32000, below Linux's ephemeral range (so an
/// outgoing connection cannot grab one between the check and the agent's
/// bind), starting at an offset derived from the process id (so two test
/// processes start far apart), and each is checked free for both TCP and
/// UDP on 127.0.0.1 before it is handed out. Never handed out twice per process.
const PORT_LOW: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// A loopback port free for both TCP and UDP right now.
pub fn free_port() -> u16 {
    let offset = (std::process::id() % 600) * 20;
    for _ in 0..PORT_SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (PORT_LOW + (offset + n) % PORT_SPAN) as u16;
        let mut seen = HANDED_OUT.lock().unwrap();
        let seen = seen.get_or_insert_with(HashSet::new);
        if seen.contains(&port) {
            continue;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tcp = TcpListener::bind(addr);
        let udp = UdpSocket::bind(addr);
        if tcp.is_ok() && udp.is_ok() {
            seen.insert(port);
            return port;
        }
    }
    panic!(
        "no free loopback port in {PORT_LOW}..{}",
        PORT_LOW + PORT_SPAN
    );
}

/// The first of `n` consecutive loopback ports, all free for TCP and UDP
/// right now and never handed out before (`myco dev` takes BASE+i).
pub fn free_port_run(n: u16) -> u16 {
    'base: loop {
        let base = free_port();
        let mut seen = HANDED_OUT.lock().unwrap();
        let seen = seen.get_or_insert_with(HashSet::new);
        for i in 1..n {
            let Some(port) = base.checked_add(i) else {
                continue 'base;
            };
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            if seen.contains(&port)
                || TcpListener::bind(addr).is_err()
                || UdpSocket::bind(addr).is_err()
            {
                continue 'base;
            }
        }
        for i in 1..n {
            seen.insert(base + i);
        }
        // The runs of later calls start past this one.
        NEXT_PORT.fetch_add(u32::from(n), Ordering::Relaxed);
        return base;
    }
}
