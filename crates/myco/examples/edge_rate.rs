//! A fixed-rate HTTP/1.1 load generator for `bench/edge.sh --rate`: wrk has
//! no `-R`, and neither `wrk2` nor `oha` is a Debian package here.
//!
//! ```sh
//! cargo build --release -p myco --example edge_rate
//! target/release/examples/edge_rate http://127.0.0.1:23002/bench/ RATE [CONNS] [SECONDS] [THREADS]
//! ```
//!
//! Open loop, as wrk2 measures: the requests of each of THREADS (one by
//! default) are due on a fixed schedule, `start + i * THREADS / RATE`. A
//! due request goes out at once on an idle keep-alive connection of its
//! thread (CONNS, default 32, split among the threads), or waits for the
//! first to free up. Latency is measured from when a request was *due*,
//! not when it was sent, so a stall counts against every request it
//! delayed (no coordinated omission). Prints the achieved rate, p50, p90,
//! p99, p99.9 and the maximum, and the failures.
//!
//! Each thread is one event loop: its connections, non-blocking, in one
//! epoll set, and a timerfd for the next due time (nanoseconds: epoll's own
//! timeout is whole milliseconds, which would add up to one to what is
//! measured). The first version ran a thread per connection, each woken
//! twice per request: at 64 connections its threads took the 2 cores the
//! proxies being measured needed (BENCHMARKS.md, issue 12, seventh pass).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// The epoll key of a thread's timer (connections are keyed by index).
const TIMER: u64 = u64::MAX;
/// How long the last answers may take after the schedule's end before
/// their requests count as failed.
const GRACE: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: edge_rate URL RATE [CONNS] [SECONDS] [THREADS]");
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
    let threads: usize = args.get(5).map_or(1, |t| t.parse().expect("THREADS"));
    assert!(
        threads >= 1 && conns >= threads,
        "CONNS must be at least THREADS"
    );
    let interval = Duration::from_secs_f64(threads as f64 / rate);
    let head = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n");
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let (hostport, head) = (hostport.clone(), head.clone());
            let mine = conns / threads + usize::from(k < conns % threads);
            // Spread the threads' schedules across one interval.
            let first = start + interval.mul_f64(k as f64 / threads as f64);
            std::thread::spawn(move || {
                Client::new(&hostport, head.into_bytes(), mine).run(first, interval, end)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut failed = 0u64;
    for h in handles {
        let (l, f) = h.join().expect("a client thread");
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

/// One keep-alive connection and the request on it, if any.
struct Conn {
    stream: TcpStream,
    /// The answer's bytes so far.
    buf: Vec<u8>,
    /// When the request in flight was due.
    due: Option<Instant>,
}

/// One thread's connections, schedule and results.
struct Client {
    hostport: String,
    head: Vec<u8>,
    epoll: Epoll,
    timer: TimerFd,
    conns: Vec<Conn>,
    idle: Vec<usize>,
    lat: Vec<Duration>,
    failed: u64,
}

impl Client {
    /// `n` connections to `hostport`, made before the schedule starts (a
    /// connect is not what is measured).
    fn new(hostport: &str, head: Vec<u8>, n: usize) -> Self {
        let epoll = Epoll::new(EpollCreateFlags::empty()).expect("epoll");
        let timer =
            TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK).expect("timerfd");
        epoll
            .add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))
            .expect("epoll add");
        let mut c = Client {
            hostport: hostport.to_string(),
            head,
            epoll,
            timer,
            conns: Vec::with_capacity(n),
            idle: (0..n).rev().collect(),
            lat: Vec::new(),
            failed: 0,
        };
        for i in 0..n {
            let stream = c.connect(i);
            c.conns.push(Conn {
                stream,
                buf: Vec::with_capacity(1024),
                due: None,
            });
        }
        c
    }

    fn connect(&self, i: usize) -> TcpStream {
        let s = TcpStream::connect(&self.hostport).expect("connect to the target");
        s.set_nodelay(true).ok();
        s.set_nonblocking(true).expect("non-blocking");
        self.epoll
            .add(&s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .expect("epoll add");
        s
    }

    /// Connection `i` made again (broken, or closed by the server); the
    /// request on it, if any, failed.
    fn reconnect(&mut self, i: usize) {
        if self.conns[i].due.is_some() {
            self.failed += 1;
        }
        let fresh = self.connect(i);
        let c = &mut self.conns[i];
        let _ = self.epoll.delete(&c.stream);
        c.stream = fresh;
        c.buf.clear();
        c.due = None;
        self.idle.push(i);
    }

    fn run(mut self, first: Instant, interval: Duration, end: Instant) -> (Vec<Duration>, u64) {
        let mut next = first;
        let mut waiting: VecDeque<Instant> = VecDeque::new();
        let mut armed: Option<Instant> = None;
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let now = Instant::now();
            while next <= now && next < end {
                waiting.push_back(next);
                next += interval;
            }
            while let (Some(&due), Some(&i)) = (waiting.front(), self.idle.last()) {
                waiting.pop_front();
                self.idle.pop();
                let c = &mut self.conns[i];
                c.due = Some(due);
                match c.stream.write(&self.head) {
                    Ok(n) if n == self.head.len() => {}
                    // A head this small goes whole on a connection with
                    // nothing in flight, or the connection is broken.
                    _ => self.reconnect(i),
                }
            }
            let busy = self.idle.len() < self.conns.len();
            if next >= end && waiting.is_empty() && !busy {
                break;
            }
            if now > end + GRACE {
                // Answers that never came.
                self.failed += (self.conns.len() - self.idle.len() + waiting.len()) as u64;
                break;
            }
            let timeout = if next < end {
                if armed != Some(next) {
                    let wait = TimeSpec::from_duration(next - now);
                    self.timer
                        .set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())
                        .expect("timerfd set");
                    armed = Some(next);
                }
                EpollTimeout::NONE
            } else {
                EpollTimeout::from(100u16)
            };
            let k = self.epoll.wait(&mut events, timeout).expect("epoll wait");
            for ev in &events[..k] {
                match ev.data() {
                    TIMER => {
                        let mut b = [0u8; 8];
                        let _ = nix::unistd::read(&self.timer, &mut b);
                        armed = None;
                    }
                    i => self.readable(i as usize),
                }
            }
        }
        (self.lat, self.failed)
    }

    /// Reads what connection `i` has; an answer complete is one latency.
    fn readable(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let mut chunk = [0u8; 16 * 1024];
        // The server's close may come with its last answer: that answer counts.
        let mut ended = false;
        loop {
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.reconnect(i),
            }
        }
        match complete(&c.buf) {
            None if ended => self.reconnect(i),
            None => {}
            Some((status, close)) => {
                let Some(due) = c.due else {
                    // Bytes nobody asked for.
                    return self.reconnect(i);
                };
                if status != 200 {
                    return self.reconnect(i);
                }
                self.lat.push(due.elapsed());
                c.due = None;
                c.buf.clear();
                if close || ended {
                    // The server's last answer on it (nginx closes after
                    // 1,000 requests): a new one, not a failure.
                    self.reconnect(i);
                } else {
                    self.idle.push(i);
                }
            }
        }
    }
}

/// The whole answer in `buf`: its status and whether the server closes
/// the connection after it; `None` while more is due. Content-Length and
/// chunked bodies (without trailers) are understood.
fn complete(buf: &[u8]) -> Option<(u16, bool)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = &buf[head_end..];
    let (mut whole, mut close) = (true, false);
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            whole = value
                .trim()
                .parse()
                .is_ok_and(|len: usize| body.len() >= len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            whole = body.ends_with(b"0\r\n\r\n");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    whole.then_some((status, close))
}
