//! Strict line endings: finds a bare LF in request heads before hyper
//! reads them (httparse accepts `\n` alone as a line end, which a proxy in
//! front of us may read differently: the root of request smuggling).
//!
//! The scanner follows the byte stream of a connection: a head, then as
//! many body bytes as `Content-Length` says, then the next head. A
//! chunked body (or an h2c preface) ends the scanning for that connection:
//! following chunk framing is hyper's job, and the heads after it are
//! rare enough on the edge (browsers do not pipeline) to leave unchecked.

/// The head bytes kept to find `Content-Length`; hyper refuses larger
/// heads anyway (431).
const MAX_HEAD: usize = 64 * 1024;

/// A bare LF ended a line in a request head.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BareLf;

/// Where the scanner is in the connection's byte stream.
enum State {
    Head { bytes: Vec<u8>, prev_cr: bool },
    Body(u64),
    Off,
}

pub(super) struct LineScanner(State);

impl Default for LineScanner {
    fn default() -> Self {
        LineScanner(State::Head {
            bytes: Vec::new(),
            prev_cr: false,
        })
    }
}

impl LineScanner {
    /// Scans the next bytes read from the connection.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> Result<(), BareLf> {
        while !data.is_empty() {
            match &mut self.0 {
                State::Off => return Ok(()),
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64) as usize;
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        *self = LineScanner::default();
                    }
                }
                State::Head { bytes, prev_cr } => {
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' && !*prev_cr {
                        return Err(BareLf);
                    }
                    *prev_cr = b == b'\r';
                    if bytes.len() < MAX_HEAD {
                        bytes.push(b);
                    } else {
                        self.0 = State::Off;
                        continue;
                    }
                    // Empty lines before the request line are skipped (RFC 9112 §2.2).
                    if bytes.as_slice() == b"\r\n" {
                        bytes.clear();
                    } else if bytes.ends_with(b"\r\n\r\n") {
                        match after_head(bytes) {
                            // No body: the next head reuses the buffer (a
                            // keep-alive connection of GETs allocates once).
                            State::Head { .. } => {
                                bytes.clear();
                                *prev_cr = false;
                            }
                            next => self.0 = next,
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What follows a complete head: its body's length, or unknown.
fn after_head(head: &[u8]) -> State {
    let mut lines = head.split(|&b| b == b'\n');
    if lines.next().is_some_and(|l| l.starts_with(b"PRI ")) {
        return State::Off;
    }
    let mut length = 0u64;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return State::Off;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => length = n,
                // hyper refuses it; nothing after it will be read.
                None => return State::Off,
            }
        }
    }
    if length == 0 {
        LineScanner::default().0
    } else {
        State::Body(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Result<(), BareLf> {
        let mut s = LineScanner::default();
        chunks.iter().try_for_each(|c| s.feed(c))
    }

    #[test]
    fn crlf_heads_pass_in_any_split() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        for at in 0..req.len() {
            assert_eq!(scan(&[&req[..at], &req[at..]]), Ok(()), "split at {at}");
        }
    }

    #[test]
    fn bare_lf_in_a_head_is_found() {
        assert_eq!(scan(&[b"GET / HTTP/1.1\nHost: a\r\n\r\n"]), Err(BareLf));
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\n\r\n"]), Err(BareLf));
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n\n"]), Err(BareLf));
    }

    #[test]
    fn body_bytes_are_skipped_and_the_next_head_checked() {
        let body_with_lf = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb";
        assert_eq!(scan(&[body_with_lf, b"GET / HTTP/1.1\r\n\r\n"]), Ok(()));
        assert_eq!(scan(&[body_with_lf, b"GET / HTTP/1.1\n\n"]), Err(BareLf));
    }

    #[test]
    fn chunked_bodies_and_h2_end_the_scan() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\na\nb";
        assert_eq!(scan(&[chunked]), Ok(()));
        assert_eq!(scan(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\n\n"]), Ok(()));
    }
}
