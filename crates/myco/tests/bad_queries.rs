//! Every error of the API is the `ApiError` JSON `/openapi.json`
//! documents: a query string it cannot parse (400, never axum's
//! plain-text rejection; schemathesis checks the content type), a method
//! a path does not take (405, never an empty body), a path it does not
//! have (404).

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

/// The header `name` of a raw answer.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    answer.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn wrong_methods_and_unknown_paths_get_the_json_error() {
    let mut h = Harness::new("bad-methods");
    let a = h.start("a", Opts::default());
    let a = h.agent(a);
    for (method, path, allow) in [
        ("PUT", "/v1/jobs", "GET,HEAD,POST"),
        ("GET", "/v1/jobs/x/scale", "POST"),
        ("PATCH", "/v1/kv/a", "GET,HEAD,PUT,DELETE"),
        ("DELETE", "/health", "GET,HEAD"),
    ] {
        let (code, text) = call(a, method, path);
        assert_eq!(code, 405, "{method} {path}: {text}");
        assert_eq!(
            header(&text, "content-type"),
            Some("application/json"),
            "{method} {path}: {text}"
        );
        let mut got: Vec<&str> = header(&text, "allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header: {text}"))
            .split(',')
            .map(str::trim)
            .collect();
        let mut want: Vec<&str> = allow.split(',').collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{method} {path}");
        assert!(
            text.contains(&format!(r#"{{"error":"{method} is not allowed on {path}"#)),
            "{method} {path}: {text}"
        );
    }
    for (method, path) in [
        ("GET", "/nope"),
        ("GET", "/v1/nope"),
        ("POST", "/v1/jobs/x/y/z"),
    ] {
        let (code, text) = call(a, method, path);
        assert_eq!(code, 404, "{method} {path}: {text}");
        assert_eq!(
            header(&text, "content-type"),
            Some("application/json"),
            "{text}"
        );
        assert!(
            text.contains(r#"{"error":"no such path"#),
            "{method} {path}: {text}"
        );
    }
}
