//! A query string the API cannot parse is answered as every other error
//! is: 400 with the `ApiError` JSON `/openapi.json` documents, never
//! axum's plain-text rejection (schemathesis checks the content type).

mod support;

use support::{Agent, Harness, Opts};

/// One raw HTTP/1.1 exchange with the token; the status and the whole answer.
fn call(a: &Agent, method: &str, path: &str) -> (u16, String) {
    let (port, token) = (a.api, a.token());
    support::raw(
        a,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        ),
    )
}

#[test]
fn unparsable_queries_get_the_json_error() {
    let mut h = Harness::new("bad-queries");
    let a = h.start("a", Opts::default());
    let a = h.agent(a);
    for (method, path) in [
        ("PUT", "/v1/cache/b/k?ttl_ms=soon"),
        ("POST", "/v1/msg/t?node=a&node=b"),
        ("POST", "/v1/msg/t/request?timeout_ms=-1"),
    ] {
        let (code, text) = call(a, method, path);
        assert_eq!(code, 400, "{method} {path}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/json"),
            "{method} {path}: {text}"
        );
        assert!(
            text.contains(r#"{"error":"bad query string"#),
            "{method} {path}: {text}"
        );
    }
}
