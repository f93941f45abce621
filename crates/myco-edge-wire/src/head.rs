//! Request and response heads for the fast path: parsed with `httparse`
//! in place, checked for what the fast path serves, and rewritten straight
//! into an output buffer with the same rules as the agent's `edge::rewrite`
//! (hop-by-hop headers out, `X-Request-Id`, `X-Forwarded-*`, `Via`), with
//! no `HeaderMap` in between.

use std::io::Write as _;
use std::mem::MaybeUninit;

use httparse::Header;

/// Most header fields the fast path parses (more: hyper answers 431).
pub const MAX_HEADERS: usize = 64;

/// Room for a head's fields, left uninitialised: `httparse` writes the
/// ones it parses (64 empty fields written per head cost more than
/// parsing a small one).
pub type Slots<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

/// Empty room for a head's fields.
pub fn slots<'b>() -> Slots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Whether `name` is a hop-by-hop header (RFC 9110 §7.6.1) or `Upgrade`,
/// never forwarded. Sorted by length first: most names are none of them.
fn is_hop_by_hop(name: &str) -> bool {
    match name.len() {
        2 => is(name, "te"),
        7 => is(name, "trailer") || is(name, "upgrade"),
        10 => is(name, "connection") || is(name, "keep-alive"),
        16 => is(name, "proxy-connection"),
        17 => is(name, "transfer-encoding"),
        18 => is(name, "proxy-authenticate"),
        19 => is(name, "proxy-authorization"),
        _ => false,
    }
}

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
    /// A `Connection` header names fields to drop (see [`names_fields`]).
    pub connection_names: bool,
    /// Its header fields.
    pub headers: &'a [Header<'a>],
    /// The head's bytes, as they came (its length is the head's).
    pub raw: &'a [u8],
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
    headers: &'b mut [MaybeUninit<Header<'b>>],
    max_bytes: usize,
    max_body: u64,
) -> Parsed<'b> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, headers) {
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
    let mut connection_names = false;
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
            connection_names |= names_fields(h.value);
        }
    }
    Parsed::Fast(Request {
        method,
        target,
        host,
        content_length: content_length.unwrap_or(0),
        close,
        connection_names,
        headers,
        raw: &buf[..len],
    })
}

/// Whether `buf` holds the end of a head: an empty line (bare LF line
/// ends included, so that such a head goes to hyper's strict refusal
/// rather than waiting for a CRLF that never comes).
pub fn ends(buf: &[u8]) -> bool {
    // A head usually arrives whole, and alone.
    if buf.ends_with(b"\r\n\r\n") {
        return true;
    }
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

/// Whether a `Connection` value names more than `keep-alive` (a field
/// that is hop-by-hop already): most heads name nothing else.
fn names_fields(value: &[u8]) -> bool {
    tokens(value).any(|t| !(t.is_empty() || t.eq_ignore_ascii_case(b"keep-alive")))
}

/// Which headers of one head must not be forwarded: the hop-by-hop ones
/// and those its `Connection` headers name. Built once per head.
struct HopByHop<'h> {
    all: &'h [Header<'h>],
    /// [`names_fields`] of some `Connection` header of the head.
    names_fields: bool,
}

impl<'h> HopByHop<'h> {
    /// For the head with fields `all`; `names_fields` as [`names_fields`]
    /// found on its `Connection` headers (while the head was read).
    fn new(all: &'h [Header<'h>], names_fields: bool) -> Self {
        HopByHop { all, names_fields }
    }

    /// Whether the header named `name` must not be forwarded.
    fn drops(&self, name: &str) -> bool {
        is_hop_by_hop(name)
            || (self.names_fields
                && self
                    .all
                    .iter()
                    .filter(|h| is(h.name, "connection"))
                    .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))))
    }
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

/// Appends the 32 hex digits of `a` then `b` to `id` (a fresh request
/// id), formed as bytes and checked once: pushed as `char`s one by one
/// they cost as much as parsing the request's head.
pub fn push_hex_id(id: &mut String, a: u64, b: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    let (high, low) = digits.split_at_mut(16);
    for (half, x) in [(high, a), (low, b)] {
        for (i, d) in half.iter_mut().enumerate() {
            *d = HEX[(x >> (60 - 4 * i)) as usize & 15];
        }
    }
    id.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
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
    // Room for the head and what is added, so that no field grows it.
    out.reserve(req.raw.len() + request_id.len() + client.len() + via.len() + 128);
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff = None;
    let (mut proto, mut fhost) = (false, false);
    let hop = HopByHop::new(req.headers, req.connection_names);
    let mut lines = Lines::new(req.raw);
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
        if hop.drops(n) {
            continue;
        }
        lines.keep(out, h);
    }
    lines.flush(out);
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

/// Header lines kept as they came: copied from the head's own bytes, each
/// run of consecutive kept lines at once (a field written as name, ": ",
/// value and CRLF is four copies; most heads keep all their lines but one
/// or two).
struct Lines<'a> {
    head: &'a [u8],
    /// The run not yet copied: its start and end in `head`.
    run: Option<(usize, usize)>,
}

impl<'a> Lines<'a> {
    fn new(head: &'a [u8]) -> Self {
        Lines { head, run: None }
    }

    /// Keeps header `h` of this head, as it came.
    fn keep(&mut self, out: &mut Vec<u8>, h: &Header<'_>) {
        let Some((start, end)) = self.line_of(h) else {
            // Not a CRLF line of this head's bytes: written afresh.
            self.flush(out);
            field(out, h.name.as_bytes(), h.value);
            return;
        };
        match self.run {
            Some((s, e)) if e == start => self.run = Some((s, end)),
            _ => {
                self.flush(out);
                self.run = Some((start, end));
            }
        }
    }

    /// Copies the run kept so far.
    fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((s, e)) = self.run.take() {
            out.extend_from_slice(&self.head[s..e]);
        }
    }

    /// Where header `h`'s line is in the head: from its name to its CRLF.
    fn line_of(&self, h: &Header<'_>) -> Option<(usize, usize)> {
        let base = self.head.as_ptr() as usize;
        let start = (h.name.as_ptr() as usize).checked_sub(base)?;
        let value = (h.value.as_ptr() as usize).checked_sub(base)?;
        let value_end = value.checked_add(h.value.len())?;
        if start >= value || value_end > self.head.len() {
            return None;
        }
        // After the value: its trailing blanks (httparse trims them), CRLF.
        let lf = value_end + self.head[value_end..].iter().position(|&b| b == b'\n')?;
        (lf > start && self.head[lf - 1] == b'\r').then_some((start, lf + 1))
    }
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
    let mut headers = slots();
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => return Ok(None),
        _ => return Err(BadAnswer),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(BadAnswer);
    };
    let mut close = version == 0;
    let (mut length, mut chunked, mut te) = (None, false, false);
    let mut connection_names = false;
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
            connection_names |= names_fields(h.value);
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
    out.reserve(len + request_id.len() + via.len() + 64);
    // An HTTP/1.1 status line goes as it came (no formatting per answer).
    let line = buf.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    if version == 1 && buf[..line].ends_with(b"\r\n") {
        out.extend_from_slice(&buf[..line]);
    } else {
        let _ = write!(out, "HTTP/1.1 {status} ");
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let hop = HopByHop::new(resp.headers, connection_names);
    let mut lines = Lines::new(&buf[..len]);
    for h in resp.headers.iter() {
        let n = h.name;
        let framing_header = (te && is(n, "transfer-encoding")) || (!te && is(n, "content-length"));
        if is(n, "x-request-id")
            || (te && is(n, "content-length"))
            || (!framing_header && hop.drops(n))
        {
            continue;
        }
        lines.keep(out, h);
    }
    lines.flush(out);
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
