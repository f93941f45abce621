//! Host and Origin checks, the API's defence against DNS rebinding.
//!
//! A web page on `evil.example` can make its own name resolve to
//! 127.0.0.1 and then, as the same origin, read and write the API on
//! loopback. What it cannot change is the name the browser puts in `Host`.
//! So before any route, [`guard`] refuses a request whose `Host` is not:
//!
//! - a loopback name (`localhost`, `*.localhost`) or address (127.0.0.0/8,
//!   `[::1]`), with any port;
//! - the address the API is bound to; any IP address when bound to the
//!   unspecified address (a rebinding attack needs a name, so an address
//!   in `Host` is never one);
//! - a name the operator listed in the config key [`CONFIG_KEY`].
//!
//! Refused with 421 and a JSON error naming the config key. A request with
//! no `Host` at all (HTTP/1.0 tools) is let through: browsers always send it.
//!
//! On state-changing methods (anything but GET, HEAD, OPTIONS, TRACE) an
//! `Origin` header, if present, must name an allowed host too (403
//! otherwise; `Origin: null` included). No `Origin` means a non-browser
//! client (the CLI, curl), which is allowed.
//!
//! Wiring: `router.layer(axum::middleware::from_fn_with_state(policy, guard))`
//! as the outermost layer, so it runs before authorization and routing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The config file key that lists extra names the API answers to.
pub const CONFIG_KEY: &str = "api_allowed_hosts";

/// What [`guard`] refused, for the metrics module.
#[derive(Debug, Default)]
pub struct GuardCounters {
    /// Requests refused for their `Host` (421).
    pub refused_host: AtomicU64,
    /// State-changing requests refused for their `Origin` (403).
    pub refused_origin: AtomicU64,
}

/// Which hosts the API answers to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HostPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bound: IpAddr,
    names: Vec<String>,
    counters: Arc<GuardCounters>,
}

impl HostPolicy {
    /// The policy for an API bound to `bound`, also answering to the
    /// operator's `names` (host names or addresses, without port).
    pub fn new(bound: SocketAddr, names: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let names = names
            .into_iter()
            .map(|n| normalize(n.as_ref()))
            .filter(|n| !n.is_empty())
            .collect();
        HostPolicy {
            inner: Arc::new(Inner {
                bound: bound.ip(),
                names,
                counters: Arc::default(),
            }),
        }
    }

    /// The refusal counters.
    pub fn counters(&self) -> Arc<GuardCounters> {
        self.inner.counters.clone()
    }

    /// Whether a `Host` value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`) is allowed.
    pub fn allows_host(&self, host: &str) -> bool {
        let Some(host) = strip_port(host.trim()) else {
            return false;
        };
        let host = normalize(host);
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            if ip.is_loopback()
                || ip == self.inner.bound.to_canonical()
                || self.inner.bound.is_unspecified()
            {
                return true;
            }
        }
        self.inner.names.contains(&host)
    }

    /// Whether an `Origin` value (`scheme://host[:port]`) names an allowed host.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let rest = origin
            .trim()
            .strip_prefix("http://")
            .or_else(|| origin.trim().strip_prefix("https://"));
        // An origin is scheme, host and port only; anything after is not one.
        rest.is_some_and(|host| !host.contains('/') && self.allows_host(host))
    }
}

/// Lowercases and drops a trailing root dot (`LocalHost.` is `localhost`).
fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of `host[:port]`, `[v6][:port]`; `None` if malformed.
fn strip_port(value: &str) -> Option<&str> {
    let port_ok = |p: &str| p.is_empty() || (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => "",
            _ => after.strip_prefix(':')?,
        };
        return port_ok(port).then_some(v6);
    }
    match value.rsplit_once(':') {
        // More than one colon is an IPv6 address without brackets: not a valid Host.
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) => port_ok(port).then_some(host),
        None => Some(value),
    }
    .filter(|h| !h.is_empty())
}

/// The middleware: refuses a request whose `Host` or (on a state-changing
/// method) `Origin` is not allowed by the policy, before any route runs.
pub async fn guard(State(policy): State<HostPolicy>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
        // HTTP/2 carries the host in the URI's authority instead.
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    if let Some(host) = host
        && !policy.allows_host(&host)
    {
        policy
            .inner
            .counters
            .refused_host
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%host, "refused a request for a host this API does not serve");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this API does not answer to the host `{}`; if that name is yours, add it to `{CONFIG_KEY}` in the agent's config file",
                host.escape_default()
            ),
        );
    }
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !safe && let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        if !policy.allows_origin(origin) {
            policy
                .inner
                .counters
                .refused_origin
                .fetch_add(1, Ordering::Relaxed);
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from the web page at `{}` may not change this node; if that page is yours, add its host name to `{CONFIG_KEY}` in the agent's config file",
                    origin.escape_default()
                ),
            );
        }
    }
    next.run(req).await
}

fn refuse(code: StatusCode, msg: String) -> Response {
    let mut resp = (code, serde_json::json!({ "error": msg }).to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> HostPolicy {
        HostPolicy::new("127.0.0.1:7070".parse().unwrap(), ["myco.lan"])
    }

    #[test]
    fn loopback_names_and_addresses_with_any_port_are_allowed() {
        let p = loopback();
        for h in [
            "localhost",
            "LocalHost.",
            "localhost:7070",
            "node1.localhost:1",
            "127.0.0.1",
            "127.0.0.1:7070",
            "127.9.8.7:80",
            "[::1]",
            "[::1]:7070",
            "[::ffff:127.0.0.1]:1",
            "myco.lan",
            "MYCO.LAN:7070",
        ] {
            assert!(p.allows_host(h), "{h} should be allowed");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_refused() {
        let p = loopback();
        for h in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "::1",
            "localhost:http",
            "localhost:123456",
            ":7070",
            "",
            "myco.lan.evil",
        ] {
            assert!(!p.allows_host(h), "{h} should be refused");
        }
    }

    #[test]
    fn the_bound_address_is_allowed_and_an_unspecified_bind_allows_any_address() {
        let p = HostPolicy::new("192.168.1.5:7070".parse().unwrap(), Vec::<String>::new());
        assert!(p.allows_host("192.168.1.5:7070"));
        assert!(!p.allows_host("192.168.1.6:7070"));
        let any = HostPolicy::new("0.0.0.0:7070".parse().unwrap(), Vec::<String>::new());
        assert!(any.allows_host("192.168.1.6:7070"));
        assert!(!any.allows_host("rebind.evil.example"));
    }

    #[test]
    fn origins_must_name_an_allowed_host() {
        let p = loopback();
        assert!(p.allows_origin("http://localhost:7070"));
        assert!(p.allows_origin("https://myco.lan"));
        assert!(!p.allows_origin("http://evil.example"));
        assert!(!p.allows_origin("null"));
        assert!(!p.allows_origin("file://localhost"));
        assert!(!p.allows_origin("http://localhost/path"));
    }
}
