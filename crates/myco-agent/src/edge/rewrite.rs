//! Which job a request is for, and the request and response heads as
//! they leave the edge. Pure functions over heads, unit-tested here.
//!
//! Routing: `Host: <job>` or `Host: <job>.<anything>` sends the whole path
//! to `<job>`; otherwise `/<job>/rest` sends `/rest` (query kept). The Host
//! rule wins when its first label names a known job, so a job that serves
//! a site under its own name sees the paths it expects.

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;

/// Where a request goes: the job, and the path and query the instance sees.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The job's name.
    pub job: &'a str,
    /// The path (and query) to send.
    pub path: PathOrWhole,
}

/// The path to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum PathOrWhole {
    /// The request's own path and query (Host routing).
    Whole,
    /// The path after the job's prefix, with the query (path routing).
    Stripped(String),
}

/// The job named by the first label of `host` (port removed), if `known`
/// says it is one.
pub fn job_from_host(host: &str, known: impl Fn(&str) -> bool) -> Option<&str> {
    // `[::1]:8080` has no job label; neither has an IP address.
    if host.starts_with('[') {
        return None;
    }
    // Byte scans: `str`'s pattern searchers cost more than the rest of
    // routing here.
    let b = host.as_bytes();
    let name_end = b.iter().rposition(|&c| c == b':').unwrap_or(b.len());
    let label_end = b[..name_end]
        .iter()
        .position(|&c| c == b'.')
        .unwrap_or(name_end);
    let (name, label) = (&host[..name_end], &host[..label_end]);
    // The address check last: most hosts are addresses or names of no job,
    // and a job lookup costs less than parsing an address.
    (!label.is_empty() && known(label) && name.parse::<IpAddr>().is_err()).then_some(label)
}

/// Where a request routes, on its raw target and with no allocation (the
/// fast path's form; [`target`] is the same rule for hyper's): the job,
/// and the path the instance sees: `None` for the whole target, else the
/// rest of the target after the job's segment (a `/` goes in front when
/// it has none). `None` when the request names no job at all (`/` with no
/// job in Host); the job may still be unknown (the caller answers 404).
pub fn route<'a>(
    host: Option<&'a str>,
    target: &'a str,
    known: impl Fn(&str) -> bool,
) -> Option<(&'a str, Option<&'a str>)> {
    if let Some(job) = host.and_then(|h| job_from_host(h, &known)) {
        return Some((job, None));
    }
    // The first segment of the path, before any query (byte scans: `str`'s
    // pattern searchers cost more than the rest of routing).
    let b = target.as_bytes();
    if b.first() != Some(&b'/') {
        return None;
    }
    let end = b[1..]
        .iter()
        .position(|&c| c == b'/' || c == b'?')
        .map_or(b.len(), |i| i + 1);
    let job = &target[1..end];
    if job.is_empty() {
        return None;
    }
    Some((job, Some(&target[end..])))
}

/// [`route`] for a parsed target, with the path to send made whole.
pub fn target<'a>(
    host: Option<&'a str>,
    pq: &'a PathAndQuery,
    known: impl Fn(&str) -> bool,
) -> Option<Target<'a>> {
    let (job, rest) = route(host, pq.as_str(), known)?;
    let path = match rest {
        None => PathOrWhole::Whole,
        Some(rest) if rest.starts_with('/') => PathOrWhole::Stripped(rest.to_string()),
        Some(rest) => PathOrWhole::Stripped(format!("/{rest}")),
    };
    Some(Target { job, path })
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, those named in `Connection` too, and
/// `Upgrade` (an upgrade passed through puts it back: [`super::tunnel`]).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most heads have none (or only `Connection: keep-alive`): one pass
    // over the names instead of nine hashed removals.
    let any = h
        .keys()
        .any(|k| k == header::UPGRADE || HOP_BY_HOP.contains(k));
    if !any {
        return;
    }
    // `keep-alive` goes anyway and `close` names no header: the usual
    // `Connection` values allocate nothing here.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.eq_ignore_ascii_case("keep-alive") && !n.eq_ignore_ascii_case("close"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::UPGRADE);
}

/// The `X-Request-Id` header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Longest request id kept from a client; a longer or odd one is replaced.
const MAX_REQUEST_ID: usize = 128;

/// The request's id: the client's, if it is short printable ASCII, else
/// `fresh()`. It is set on the request.
pub fn request_id(h: &mut HeaderMap, fresh: impl FnOnce() -> String) -> HeaderValue {
    if let Some(v) = h.get(&REQUEST_ID)
        && !v.is_empty()
        && v.len() <= MAX_REQUEST_ID
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let v = HeaderValue::from_str(&fresh()).unwrap_or(HeaderValue::from_static("invalid"));
    h.insert(REQUEST_ID, v.clone());
    v
}

/// Whether the request already passed through this edge (`Via` names it):
/// a route that leads back here would loop forever.
pub fn is_loop(h: &HeaderMap, via_token: &str) -> bool {
    h.get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop.split_whitespace().nth(1) == Some(via_token))
}

/// The forwarding headers: `X-Forwarded-For` (appended), `-Proto`, `-Host`
/// (kept if a proxy in front set them), `Via` (appended).
pub fn add_forwarding(h: &mut HeaderMap, client: IpAddr, via: &HeaderValue) {
    let xff = match h.get(&FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(FORWARDED_FOR, v);
    }
    if !h.contains_key(&FORWARDED_PROTO) {
        h.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !h.contains_key(&FORWARDED_HOST)
        && let Some(host) = h.get(header::HOST).cloned()
    {
        h.insert(FORWARDED_HOST, host);
    }
    h.append(header::VIA, via.clone());
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
