//! Request and response heads for the fast path: parsed with `httparse`
//! in place, checked for what the fast path serves, and rewritten straight
//! into an output buffer with the same rules as the agent's `edge::rewrite`
//! (hop-by-hop headers out, `X-Request-Id`, `X-Forwarded-*`, `Via`), with
//! no `HeaderMap` in between.

use std::io::Write as _;

use httparse::Header;

/// Most header fields the fast path parses (more: hyper answers 431).
pub const MAX_HEADERS: usize = 64;

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `Upgrade`, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A request head the fast path serves.
#[derive(Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a str,
    /// The request target (origin form: a path, maybe a query).
    pub target: &'a str,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The body's length (0: none).
    pub content_length: u64,
    /// The client said `Connection: close`.
    pub close: bool,
    /// Its header fields.
    pub headers: &'a [Header<'a>],
    /// The head's length in bytes.
    pub len: usize,
}

/// What a look at the buffered bytes found.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole head the fast path serves.
    Fast(Request<'a>),
    /// Not a whole head yet (and within the size limit).
    Partial,
    /// A head hyper must serve (or answer with the precise error).
    Hyper,
}

/// Whether `name` is `want` (ASCII case-insensitively).
fn is(name: &str, want: &str) -> bool {
    name.eq_ignore_ascii_case(want)
}

/// Parses the head at the start of `buf`; `max_bytes` is the server's
/// header size limit, `max_body` its body limit.
pub fn parse<'b>(
    buf: &'b [u8],
    headers: &'b mut [Header<'b>],
    max_bytes: usize,
    max_body: u64,
) -> Parsed<'b> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_bytes => n,
        Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Parsed::Partial,
        // Too large, too many fields, not HTTP/1.x (an h2c preface), bad
        // syntax: hyper answers each as it always has.
        _ => return Parsed::Hyper,
    };
    // The server refuses bare LF line endings (strict mode, in the socket
    // hyper reads through): a head with one goes there.
    if has_bare_lf(&buf[..len]) {
        return Parsed::Hyper;
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hyper;
    };
    if !target.starts_with('/') {
        return Parsed::Hyper;
    }
    let headers: &'b [Header<'b>] = req.headers;
    let mut host = None;
    let mut content_length = None;
    let mut close = false;
    for h in headers {
        let n = h.name;
        if is(n, "host") {
            if host.is_some() {
                return Parsed::Hyper;
            }
            match std::str::from_utf8(h.value) {
                Ok(v) => host = Some(v),
                Err(_) => return Parsed::Hyper,
            }
        } else if is(n, "content-length") {
            let v = std::str::from_utf8(h.value).ok();
            let v = v.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            match v.and_then(|v| v.parse::<u64>().ok()) {
                Some(v) if content_length.is_none() && v <= max_body => content_length = Some(v),
                _ => return Parsed::Hyper,
            }
        } else if is(n, "transfer-encoding") || is(n, "upgrade") || is(n, "expect") {
            return Parsed::Hyper;
        } else if is(n, "connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Hyper;
                }
                close |= token.eq_ignore_ascii_case(b"close");
            }
        }
    }
    Parsed::Fast(Request {
        method,
        target,
        host,
        content_length: content_length.unwrap_or(0),
        close,
        headers,
        len,
    })
}

/// Whether `buf` holds the end of a head: an empty line (bare LF line
/// ends included, so that such a head goes to hyper's strict refusal
/// rather than waiting for a CRLF that never comes).
pub fn ends(buf: &[u8]) -> bool {
    buf.iter().enumerate().any(|(i, &b)| {
        b == b'\n' && (buf[i + 1..].starts_with(b"\r\n") || buf[i + 1..].starts_with(b"\n"))
    })
}

/// Whether a line in `head` ends with LF alone.
fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a header named `name` must not be forwarded: hop-by-hop, or
/// named in a `Connection` header of `all`.
fn hop_by_hop(name: &str, all: &[Header<'_>]) -> bool {
    HOP_BY_HOP.iter().any(|h| is(name, h))
        || all
            .iter()
            .filter(|h| is(h.name, "connection"))
            .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// Longest request id kept from a client (as the agent's `edge::rewrite`).
const MAX_REQUEST_ID: usize = 128;

/// The client's request id if it is short printable ASCII.
pub fn client_request_id<'a>(headers: &[Header<'a>]) -> Option<&'a str> {
    let h = headers.iter().find(|h| is(h.name, "x-request-id"))?;
    let v = h.value;
    (!v.is_empty() && v.len() <= MAX_REQUEST_ID && v.iter().all(u8::is_ascii_graphic))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

/// Whether `Via` names this edge (`via_token`): a routing loop.
pub fn is_loop(headers: &[Header<'_>], via_token: &str) -> bool {
    headers
        .iter()
        .filter(|h| is(h.name, "via"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop.split_whitespace().nth(1) == Some(via_token))
}

/// Writes the request head as it leaves for the instance: `path` (the
/// job's prefix taken off, or the whole target), hop-by-hop headers out,
/// the request id, `X-Forwarded-For` (appended to the first one),
/// `-Proto` and `-Host` (unless set), `Via` appended.
pub fn write_request(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    path: &str,
    request_id: &str,
    client: &str,
    via: &str,
) {
    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff = None;
    let (mut proto, mut fhost) = (false, false);
    for h in req.headers {
        let n = h.name;
        if is(n, "x-request-id") {
            continue;
        }
        if is(n, "x-forwarded-for") {
            // The first value, as `HeaderMap::get` reads it.
            xff = xff.or(Some(h.value));
            continue;
        }
        proto |= is(n, "x-forwarded-proto");
        fhost |= is(n, "x-forwarded-host");
        if hop_by_hop(n, req.headers) {
            continue;
        }
        field(out, n.as_bytes(), h.value);
    }
    field(out, b"x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prev) = xff.filter(|v| v.iter().all(|b| b.is_ascii_graphic() || *b == b' ')) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !proto {
        field(out, b"x-forwarded-proto", b"http");
    }
    if !fhost && let Some(host) = req.host {
        field(out, b"x-forwarded-host", host.as_bytes());
    }
    field(out, b"via", via.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the header line `name: value`.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked: relayed with its framing.
    Chunked,
    /// Until the instance closes (then the client's connection closes too).
    UntilClose,
}

/// A response head from an instance, rewritten for the client.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Its body's framing.
    pub framing: Framing,
    /// The instance will close the connection after it.
    pub close: bool,
    /// The head's length in the instance's bytes.
    pub len: usize,
}

/// The instance's answer is not HTTP/1.x as the fast path reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct BadAnswer;

/// Parses the response head at the start of `buf` and writes it as it
/// leaves for the client into `out`: `None` until it is whole.
pub fn response(
    buf: &[u8],
    head_request: bool,
    request_id: &str,
    via: &str,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Answer>, BadAnswer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => return Ok(None),
        _ => return Err(BadAnswer),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(BadAnswer);
    };
    let mut close = version == 0;
    let (mut length, mut chunked, mut te) = (None, false, false);
    for h in resp.headers.iter() {
        if is(h.name, "content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match v {
                Some(v) if length.is_none_or(|l| l == v) => length = Some(v),
                _ => return Err(BadAnswer),
            }
        } else if is(h.name, "transfer-encoding") {
            te = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if is(h.name, "connection") {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if te {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    out.clear();
    // An HTTP/1.1 status line goes as it came (no formatting per answer).
    let line = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    if version == 1 && buf[..line].ends_with(b"\r\n") {
        out.extend_from_slice(&buf[..line]);
    } else {
        let _ = write!(out, "HTTP/1.1 {status} ");
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for h in resp.headers.iter() {
        let n = h.name;
        let framing_header = (te && is(n, "transfer-encoding")) || (!te && is(n, "content-length"));
        if is(n, "x-request-id")
            || (te && is(n, "content-length"))
            || (!framing_header && hop_by_hop(n, resp.headers))
        {
            continue;
        }
        field(out, n.as_bytes(), h.value);
    }
    field(out, b"x-request-id", request_id.as_bytes());
    field(out, b"via", via.as_bytes());
    if client_close || framing == Framing::UntilClose {
        field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Answer {
        status,
        framing,
        close,
        len,
    }))
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
