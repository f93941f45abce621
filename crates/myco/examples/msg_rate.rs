//! Publish-to-receive latency over the Redis protocol at a fixed rate, for
//! `bench/cache.sh` (step `msg`). `bench/msg_latency.py` does the same in
//! Python, but its own floor is the figure's size: against a real
//! redis-server alone it measured p99 4–6 ms on a quiet machine, so it
//! cannot tell whether a 2 ms target is met.
//!
//! ```sh
//! cargo build --release -p myco --example msg_rate
//! target/release/examples/msg_rate PUB_PORT SUB_PORT [RATE] [SECONDS]
//! ```
//!
//! A subscriber thread `SUBSCRIBE`s to `lat` on SUB_PORT; once the
//! subscription has had time to reach the publisher's node, the main
//! thread `PUBLISH`es RATE messages a second (default 10,000) on PUB_PORT
//! for SECONDS (default 5), in 1 ms batches, each message's body its send
//! time in ns since the start (one process, one monotonic clock). Prints
//! what `msg_latency.py` prints: sent, received, latency p50 / p99 / max.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: msg_rate PUB_PORT SUB_PORT [RATE] [SECONDS]");
        std::process::exit(2);
    }
    let port = |s: &str| s.parse::<u16>().expect("a port number");
    let (pub_port, sub_port) = (port(&args[1]), port(&args[2]));
    let rate: u64 = args.get(3).map_or(10_000, |s| s.parse().expect("a rate"));
    let secs: f64 = args.get(4).map_or(5.0, |s| s.parse().expect("seconds"));
    let base = Instant::now();

    let sub = connect(sub_port);
    let mut reader = BufReader::new(sub.try_clone().expect("clone the socket"));
    (&sub)
        .write_all(&command(&["SUBSCRIBE", "lat"]))
        .expect("subscribe");
    read_reply(&mut reader).expect("the subscription's confirmation");
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let receiver = thread::spawn(move || receive(reader, base, &stop));
    // The subscription's announcement reaches the publisher's node.
    thread::sleep(Duration::from_millis(1_500));

    let publisher = connect(pub_port);
    let mut replies = publisher.try_clone().expect("clone the socket");
    thread::spawn(move || {
        let mut buf = [0u8; 1 << 16];
        while matches!(replies.read(&mut buf), Ok(n) if n > 0) {}
    });
    let start = Instant::now();
    let (mut sent, mut batch) = (0u64, Vec::new());
    while start.elapsed().as_secs_f64() < secs {
        let tick = Instant::now();
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        batch.clear();
        let now = base.elapsed().as_nanos().to_string();
        for _ in sent..due {
            batch.extend_from_slice(&command(&["PUBLISH", "lat", &now]));
        }
        (&publisher).write_all(&batch).expect("publish");
        sent = sent.max(due);
        if let Some(pause) = Duration::from_millis(1).checked_sub(tick.elapsed()) {
            thread::sleep(pause);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::Relaxed);
    // Wakes the receiver's blocking read.
    let _ = sub.shutdown(std::net::Shutdown::Both);
    let mut lat = receiver.join().expect("the receiver");
    lat.sort_unstable();
    let pct = |p: usize| {
        lat.get((lat.len().max(1) - 1) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "sent {sent} in {elapsed:.1} s ({:.0}/s), received {}; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        sent as f64 / elapsed,
        lat.len(),
        ms(pct(50)),
        ms(pct(99)),
        ms(lat.last().copied().unwrap_or(0)),
    );
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// A RESP array of bulk strings.
fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n{p}\r\n", p.len()).as_bytes());
    }
    out
}

/// Reads messages until told to stop; each `message` on `lat` gives a
/// latency in ns.
fn receive(mut r: BufReader<TcpStream>, base: Instant, done: &AtomicBool) -> Vec<u64> {
    let mut lat = Vec::new();
    while let Some(parts) = read_reply(&mut r) {
        let now = base.elapsed().as_nanos() as u64;
        if parts.first().map(Vec::as_slice) == Some(b"message")
            && let Some(sent) = parts
                .get(2)
                .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
        {
            lat.push(now.saturating_sub(sent));
        }
        if done.load(Ordering::Relaxed) {
            break;
        }
    }
    lat
}

/// One reply: an array or push of bulk strings (or a lone simple value),
/// its elements' bytes; `None` at the end of the stream.
fn read_reply(r: &mut BufReader<TcpStream>) -> Option<Vec<Vec<u8>>> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_first()?;
    match kind {
        b'*' | b'>' => {
            let n: usize = std::str::from_utf8(rest).ok()?.parse().ok()?;
            (0..n).map(|_| read_element(r)).collect()
        }
        _ => Some(vec![rest.to_vec()]),
    }
}

fn read_element(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_first()?;
    if *kind != b'$' {
        return Some(rest.to_vec());
    }
    let len: usize = std::str::from_utf8(rest).ok()?.parse().ok()?;
    let mut buf = vec![0; len + 2];
    r.read_exact(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

fn read_line(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Some(line)
}
