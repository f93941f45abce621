//! A fixed-rate HTTP/1.1 load generator for `bench/edge.sh --rate`: wrk has
//! no `-R`, and neither `wrk2` nor `oha` is a Debian package here.
//!
//! ```sh
//! cargo build --release -p myco --example edge_rate
//! target/release/examples/edge_rate http://127.0.0.1:23002/bench/ RATE [CONNS] [SECONDS]
//! ```
//!
//! Each of CONNS keep-alive connections (a thread each) sends its share of
//! RATE requests per second on a fixed schedule: request `i` is due at
//! `start + i * CONNS / RATE`. Latency is measured from when a request was
//! *due*, not when it was sent, so a stall counts against every request it
//! delayed (no coordinated omission, as in wrk2). Prints the achieved rate,
//! p50, p90, p99, p99.9 and the maximum, and the failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: edge_rate URL RATE [CONNS] [SECONDS]");
        std::process::exit(2);
    }
    let url = args[1].strip_prefix("http://").expect("an http:// URL");
    let (hostport, path) = match url.find('/') {
        Some(i) => (url[..i].to_string(), url[i..].to_string()),
        None => (url.to_string(), "/".to_string()),
    };
    let rate: f64 = args[2].parse().expect("RATE: requests per second");
    let conns: usize = args.get(3).map_or(32, |c| c.parse().expect("CONNS"));
    let secs: u64 = args.get(4).map_or(10, |s| s.parse().expect("SECONDS"));
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs(secs);
    let threads: Vec<_> = (0..conns)
        .map(|k| {
            let (hostport, path) = (hostport.clone(), path.clone());
            // Spread the connections' schedules across one interval.
            let offset = interval.mul_f64(k as f64 / conns as f64);
            std::thread::spawn(move || run(&hostport, &path, start + offset, interval, end))
        })
        .collect();
    let mut lat = Vec::new();
    let mut failed = 0u64;
    for t in threads {
        let (l, f) = t.join().expect("a client thread");
        lat.extend(l);
        failed += f;
    }
    lat.sort_unstable();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d: &Duration| d.as_secs_f64() * 1000.0)
    };
    println!(
        "rate {:.0}/s offered, {:.0}/s done; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}; failed {failed}",
        rate,
        lat.len() as f64 / secs as f64,
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        q(1.0),
    );
}

/// One connection's schedule: latencies of answered requests, and failures.
fn run(
    hostport: &str,
    path: &str,
    first: Instant,
    interval: Duration,
    end: Instant,
) -> (Vec<Duration>, u64) {
    let mut lat = Vec::new();
    let mut failed = 0;
    let mut conn = None;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n");
    let mut due = first;
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if conn.is_none() {
            conn = TcpStream::connect(hostport).ok().map(|s| {
                s.set_nodelay(true).ok();
                (BufReader::new(s.try_clone().expect("clone")), s)
            });
        }
        match conn.as_mut().map(|(r, w)| exchange(r, w, head.as_bytes())) {
            Some(Ok(200)) => lat.push(due.elapsed()),
            _ => {
                failed += 1;
                conn = None;
            }
        }
        due += interval;
    }
    (lat, failed)
}

/// One request and its whole answer; the status.
fn exchange(r: &mut BufReader<TcpStream>, w: &mut TcpStream, head: &[u8]) -> std::io::Result<u16> {
    w.write_all(head)?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut len, mut chunked) = (0usize, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        } else if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    if !chunked {
        r.read_exact(&mut vec![0; len])?;
        return Ok(status);
    }
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
        r.read_exact(&mut vec![0; n + 2])?;
        if n == 0 {
            return Ok(status);
        }
    }
}
