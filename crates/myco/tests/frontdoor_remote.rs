//! Issue 9, finding 6: an API that listens off loopback. Every read but
//! `/health` and `/metrics` then needs the token, and a browser gets in
//! through the login form, which trades the token once for a session
//! cookie, never a URL. The agent listens on `0.0.0.0` (off loopback for
//! its rules); the test reaches it over loopback.

mod support;

use support::{Agent, Harness, Opts, raw};

/// One raw HTTP/1.1 exchange with the API over loopback.
fn call(a: &Agent, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let port = a.api;
    raw(
        a,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn off_loopback_reads_need_the_token_and_a_browser_logs_in_with_a_cookie() {
    let mut h = Harness::new("front-remote");
    let a = h.start(
        "a",
        Opts {
            api_host: Some("0.0.0.0".into()),
            ..Opts::default()
        },
    );
    let a = h.agent(a);
    let token = a.token();
    let origin = format!("Origin: http://127.0.0.1:{}\r\n", a.api);

    // Open: health, metrics, the page and its login form.
    for path in ["/health", "/metrics", "/", "/login"] {
        assert_eq!(call(a, "GET", path, "", "").0, 200, "{path}");
    }
    // Closed without the token: every read the page makes.
    for path in ["/v1/status", "/v1/nodes", "/v1/kv?prefix=", "/v1/events"] {
        assert_eq!(
            call(a, "GET", path, "", "").0,
            401,
            "{path} without a token"
        );
    }
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(call(a, "GET", "/v1/status", &bearer, "").0, 200);

    // The browser's way in: the form, a cookie, never the token in a URL.
    let form = "application/x-www-form-urlencoded";
    let login = |t: &str| {
        call(
            a,
            "POST",
            "/login",
            &format!("{origin}Content-Type: {form}\r\n"),
            &format!("token={t}"),
        )
    };
    assert_eq!(login("wrong").0, 401);
    let (code, ok) = login(&token);
    assert_eq!(code, 303, "{ok}");
    let pair = ok
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .and_then(|(_, v)| v.split(';').next())
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no session cookie: {ok}"));
    assert!(!ok.contains(&token), "the token came back in the answer");
    let cookie = format!("Cookie: {pair}\r\n");

    // The cookie opens reads and writes from the page's own origin ...
    assert_eq!(call(a, "GET", "/v1/nodes", &cookie, "").0, 200);
    let (code, body) = call(
        a,
        "PUT",
        "/v1/kv/from-browser",
        &format!("{cookie}{origin}"),
        "v",
    );
    assert!(
        (200..300).contains(&code),
        "a write with the session: {body}"
    );
    let (_, got) = call(a, "GET", "/v1/kv/from-browser", &bearer, "");
    assert!(got.ends_with("\r\n\r\nv"), "{got}");
    // ... but not from another site's page, and a made-up session opens nothing.
    let foreign = format!("{cookie}Origin: http://attacker.example\r\n");
    assert_eq!(
        call(a, "PUT", "/v1/kv/from-elsewhere", &foreign, "x").0,
        403
    );
    let forged = "Cookie: myco_session=00000000000000000000000000000000\r\n";
    assert_eq!(call(a, "GET", "/v1/nodes", forged, "").0, 401);
}
