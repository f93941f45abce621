use super::*;

fn parse_ok(raw: &[u8], f: impl FnOnce(&Request<'_>)) {
    let mut hdrs = slots();
    match parse(raw, &mut hdrs, 16 * 1024, 1 << 30) {
        Parsed::Fast(r) => f(&r),
        other => panic!("not fast: {other:?}"),
    }
}

fn verdict(raw: &[u8]) -> &'static str {
    let mut hdrs = slots();
    match parse(raw, &mut hdrs, 16 * 1024, 100) {
        Parsed::Fast(_) => "fast",
        Parsed::Partial => "partial",
        Parsed::Hyper => "hyper",
    }
}

#[test]
fn plain_requests_are_fast_and_the_rest_go_to_hyper() {
    assert_eq!(verdict(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), "fast");
    assert_eq!(verdict(b"GET /a HTTP/1.1\r\nHost: x\r\n"), "partial");
    let hyper: [&[u8]; 11] = [
        b"GET /a HTTP/1.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET /a HTTP/1.1\r\nConnection: Upgrade\r\n\r\n",
        b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
        b"GET /a HTTP/1.1\nHost: x\r\n\r\n",
        b"GET http://x/a HTTP/1.1\r\n\r\n",
    ];
    for raw in hyper {
        assert_eq!(verdict(raw), "hyper", "{}", String::from_utf8_lossy(raw));
    }
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..MAX_HEADERS + 1 {
        many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        verdict(&many),
        "hyper",
        "too many fields: hyper answers 431"
    );
    let big = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; 17 * 1024]].concat();
    assert_eq!(verdict(&big), "hyper", "too large: hyper answers 431");
}

#[test]
fn the_request_head_leaves_rewritten() {
    let raw = b"POST /j/p?q=1 HTTP/1.1\r\nHost: edge:80\r\nConnection: keep-alive, X-Secret\r\n\
        X-Secret: s\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: abc\r\n\
        Via: 1.0 other\r\nX-Custom: Yes\r\nContent-Length: 2\r\n\r\nhi";
    parse_ok(raw, |r| {
        assert_eq!(
            (r.method, r.target, r.host),
            ("POST", "/j/p?q=1", Some("edge:80"))
        );
        assert_eq!(
            (r.content_length, r.close, r.raw.len()),
            (2, false, raw.len() - 2)
        );
        assert_eq!(client_request_id(r.headers), Some("abc"));
        assert!(!is_loop(r.headers, "myco-me"));
        assert!(is_loop(r.headers, "other"));
        let mut out = Vec::new();
        write_request(&mut out, r, "/p?q=1", "abc", "127.0.0.2", "1.1 myco-me");
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "POST /p?q=1 HTTP/1.1\r\nHost: edge:80\r\nVia: 1.0 other\r\nX-Custom: Yes\r\n\
             Content-Length: 2\r\nx-request-id: abc\r\nx-forwarded-for: 10.0.0.1, 127.0.0.2\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: edge:80\r\nvia: 1.1 myco-me\r\n\r\n"
        );
    });
}

#[test]
fn odd_request_ids_are_replaced() {
    let long = format!(
        "GET / HTTP/1.1\r\nX-Request-Id: {}\r\n\r\n",
        "a".repeat(129)
    );
    for raw in [
        "GET / HTTP/1.1\r\nX-Request-Id: \r\n\r\n",
        "GET / HTTP/1.1\r\nX-Request-Id: a b\r\n\r\n",
        long.as_str(),
    ] {
        parse_ok(raw.as_bytes(), |r| {
            assert_eq!(client_request_id(r.headers), None)
        });
    }
}

fn answer(raw: &[u8], head_request: bool, client_close: bool) -> (Answer, String) {
    let mut out = Vec::new();
    let a = response(
        raw,
        head_request,
        "rid",
        "1.1 myco-me",
        client_close,
        &mut out,
    )
    .unwrap()
    .unwrap();
    (a, String::from_utf8(out).unwrap())
}

#[test]
fn answers_are_framed_and_rewritten() {
    let (a, out) = answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Up\r\nX-Up: 1\r\n\
          X-Request-Id: theirs\r\nServer: s\r\n\r\nhello",
        false,
        false,
    );
    assert_eq!(
        (a.status, a.framing, a.close),
        (200, Framing::Length(5), false)
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: s\r\nx-request-id: rid\r\nvia: 1.1 myco-me\r\n\r\n"
    );
    let (a, out) = answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        false,
        true,
    );
    assert_eq!(a.framing, Framing::Chunked);
    assert!(out.contains("Transfer-Encoding: chunked\r\n") && !out.contains("Content-Length"));
    assert!(out.ends_with("connection: close\r\n\r\n"));
    let (a, out) = answer(b"HTTP/1.1 200 OK\r\n\r\n", false, false);
    assert_eq!(a.framing, Framing::UntilClose);
    assert!(out.ends_with("connection: close\r\n\r\n"));
    for (raw, head) in [
        (b"HTTP/1.1 204 No Content\r\n\r\n".as_slice(), false),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
        (b"HTTP/1.1 103 Early Hints\r\n\r\n", false),
    ] {
        assert_eq!(answer(raw, head, false).0.framing, Framing::Empty);
    }
    let (a, _) = answer(
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        false,
        false,
    );
    assert!(a.close, "an HTTP/1.0 answer closes its connection");
    let (a, _) = answer(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        false,
        false,
    );
    assert!(a.close);
    let mut out = Vec::new();
    let partial = response(b"HTTP/1.1 200 OK\r\n", false, "r", "v", false, &mut out);
    assert!(matches!(partial, Ok(None)));
    let bad = response(
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        false,
        "r",
        "v",
        false,
        &mut out,
    );
    assert!(bad.is_err());
}

#[test]
fn a_fresh_request_id_is_both_numbers_in_hex() {
    let mut id = String::from("x");
    push_hex_id(&mut id, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
    assert_eq!(id, "x0123456789abcdeffedcba9876543210");
    id.clear();
    push_hex_id(&mut id, 0, 1);
    assert_eq!(id, format!("{:016x}{:016x}", 0, 1));
}

#[test]
fn kept_lines_go_as_they_came_and_bare_lf_lines_are_written_afresh() {
    let (_, out) = answer(
        b"HTTP/1.1 200 OK\r\nX-A:  spaced  \r\nX-E:\r\nConnection: keep-alive\r\n\
          X-L: l\nContent-Length: 0\r\nX-Z: z\r\n\r\n",
        false,
        false,
    );
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nX-A:  spaced  \r\nX-E:\r\nX-L: l\r\nContent-Length: 0\r\nX-Z: z\r\n\
         x-request-id: rid\r\nvia: 1.1 myco-me\r\n\r\n"
    );
}
