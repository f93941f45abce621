//! Who may call what. Every mutating request needs `Authorization: Bearer
//! TOKEN` (`POST /v1/jobs/plan` changes nothing and counts as a read); when the API listens off loopback, every request but `/health`
//! `/metrics` and `/openapi.json` needs it; the cluster key needs it always. A dashboard
//! session cookie (see [`super::dashboard::login`]) counts as the token;
//! the dashboard and its login form are always open.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::errors::HttpError;

/// Whether the request carries exactly this token.
pub fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token's length is not secret, its bytes are.
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// Whether a request announces a body (one the refusal leaves unread).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The middleware: refuses a request that needs the token and lacks it.
pub async fn authorize(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // The API document is public knowledge, like the metrics.
    let always_open = matches!(
        path,
        "/health" | "/metrics" | "/" | "/login" | "/openapi.json"
    );
    // A job plan is a POST (it carries a spec) but changes nothing: a read.
    let reads = matches!(*req.method(), Method::GET | Method::HEAD)
        || (*req.method() == Method::POST && path == "/v1/jobs/plan");
    let needs_token = !always_open && (!reads || !s.open_reads || path == "/v1/cluster/key");
    let refused = needs_token
        && !token_matches(req.headers(), &s.token)
        && !super::front::session_cookie(req.headers())
            .is_some_and(|id| s.front.sessions.valid(id, std::time::Instant::now()));
    if refused {
        let mut refusal = HttpError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token: pass --token, set MYCO_API_TOKEN, or point --data-dir at this node's data dir",
        )
        .into_response();
        // The body is never read, so hyper closes the connection after the
        // answer; saying so keeps a client from reusing it for its next
        // request (which then failed with an EOF: seen in the CLI test).
        if has_body(req.headers()) {
            refusal.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        return refusal;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_is_exact() {
        let mut h = HeaderMap::new();
        assert!(!token_matches(&h, "abc"));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(token_matches(&h, "abc"));
        assert!(!token_matches(&h, "abd"));
        assert!(!token_matches(&h, "abcd"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(!token_matches(&h, "abc"));
    }

    #[test]
    fn a_body_is_announced_by_its_length_or_chunking() {
        let mut h = HeaderMap::new();
        assert!(!has_body(&h));
        h.insert(header::CONTENT_LENGTH, "0".parse().unwrap());
        assert!(!has_body(&h));
        h.insert(header::CONTENT_LENGTH, "1".parse().unwrap());
        assert!(has_body(&h));
        let mut h = HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert!(has_body(&h));
    }
}
