use super::*;

fn known(j: &str) -> bool {
    matches!(j, "hello" | "web")
}

fn pq(s: &str) -> PathAndQuery {
    s.parse().unwrap()
}

#[test]
fn a_path_prefix_is_stripped_and_the_query_kept() {
    let p = pq("/hello/x/y?z=1");
    let t = target(Some("127.0.0.1:8080"), &p, known).unwrap();
    assert_eq!(t.job, "hello");
    assert_eq!(t.path, PathOrWhole::Stripped("/x/y?z=1".into()));
    let p = pq("/hello");
    assert_eq!(
        target(None, &p, known).unwrap().path,
        PathOrWhole::Stripped("/".into())
    );
    let p = pq("/hello?a=b");
    assert_eq!(
        target(None, &p, known).unwrap().path,
        PathOrWhole::Stripped("/?a=b".into())
    );
}

#[test]
fn a_host_naming_a_job_keeps_the_whole_path() {
    let p = pq("/whole/path?q");
    for host in [
        "hello",
        "hello:8080",
        "hello.example",
        "hello.example.com:80",
    ] {
        let t = target(Some(host), &p, known).unwrap();
        assert_eq!((t.job, t.path), ("hello", PathOrWhole::Whole), "{host}");
    }
}

#[test]
fn a_host_that_is_no_job_falls_back_to_the_path() {
    let p = pq("/web/a");
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "other.example"] {
        let t = target(Some(host), &p, known).unwrap();
        assert_eq!(t.job, "web", "{host}");
        assert_eq!(t.path, PathOrWhole::Stripped("/a".into()));
    }
    // An unknown first segment is still the job: the caller answers 404.
    let p = pq("/nosuchjob/");
    assert_eq!(target(None, &p, known).unwrap().job, "nosuchjob");
    let p = pq("/");
    assert_eq!(target(None, &p, known), None);
}

#[test]
fn hop_by_hop_headers_and_those_connection_names_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-secret"),
    );
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h);
    let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-kept"]);
}

#[test]
fn a_sane_request_id_is_kept_and_a_bad_one_replaced() {
    let mut h = HeaderMap::new();
    h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
    assert_eq!(request_id(&mut h, || "new".into()), "abc-123");
    let mut h = HeaderMap::new();
    assert_eq!(request_id(&mut h, || "new".into()), "new");
    assert_eq!(h.get(REQUEST_ID).unwrap(), "new");
    let mut h = HeaderMap::new();
    h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(200)).unwrap());
    assert_eq!(request_id(&mut h, || "new".into()), "new");
}

#[test]
fn forwarding_headers_append_and_via_detects_loops() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("hello.example"));
    h.insert(FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
    let via = HeaderValue::from_static("1.1 myco-abc");
    assert!(!is_loop(&h, "myco-abc"));
    add_forwarding(&mut h, "10.0.0.2".parse().unwrap(), &via);
    assert_eq!(h.get(FORWARDED_FOR).unwrap(), "10.0.0.1, 10.0.0.2");
    assert_eq!(h.get(FORWARDED_PROTO).unwrap(), "http");
    assert_eq!(h.get(FORWARDED_HOST).unwrap(), "hello.example");
    assert!(is_loop(&h, "myco-abc"));
    assert!(!is_loop(&h, "myco-other"));
    let mut h = HeaderMap::new();
    h.insert(
        header::VIA,
        HeaderValue::from_static("1.0 fred, 1.1 myco-abc"),
    );
    assert!(is_loop(&h, "myco-abc"));
}

#[test]
fn odd_hosts_and_targets_route_as_written_down() {
    let known = |j: &str| ["j", "web"].contains(&j);
    // (Host, target, the job and the path the instance sees; None: no job).
    let cases = [
        (None, "/j/a/b?q=1", Some(("j", "/a/b?q=1"))),
        (None, "/j", Some(("j", "/"))),
        (None, "/j?x=1", Some(("j", "/?x=1"))),
        (None, "/j/", Some(("j", "/"))),
        (None, "/", None),
        (None, "//x", None),
        (None, "/?q", None),
        (None, "/unknown/x", Some(("unknown", "/x"))),
        (Some("web"), "/a", Some(("web", "/a"))),
        (Some("web.example:80"), "/x?y", Some(("web", "/x?y"))),
        (Some("web:"), "/q", Some(("web", "/q"))),
        (Some("127.0.0.1:8080"), "/j/z", Some(("j", "/z"))),
        (Some("[::1]:80"), "/j", Some(("j", "/"))),
        (Some("other.web"), "/j/k", Some(("j", "/k"))),
        (Some(""), "/j/k", Some(("j", "/k"))),
    ];
    for (host, raw, want) in cases {
        let p = pq(raw);
        let got = target(host, &p, known).map(|t| {
            let path = match t.path {
                PathOrWhole::Whole => raw.to_string(),
                PathOrWhole::Stripped(s) => s,
            };
            (t.job.to_string(), path)
        });
        let want = want.map(|(j, p): (&str, &str)| (j.to_string(), p.to_string()));
        assert_eq!(got, want, "Host {host:?}, target {raw}");
    }
}
