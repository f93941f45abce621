//! The Python `redis` package (a real client other than `redis-cli`)
//! against two agents' Redis protocol: SET/GET across nodes, `SET k v EX
//! 1` then expiry, PUBLISH/SUBSCRIBE across nodes, and an unsupported
//! command's clear error, over RESP2 and over RESP3 (`HELLO 3`,
//! redis-py's default). The checks are in `cache_util/redis_py.py`.
//! CI installs the package (`.ci/run`); without it the test says so and
//! skips. Also `redis-cli -3` (RESP3) when `redis-tools` is installed.

mod cache_util;
mod support;

use std::process::Command;

use cache_util::{have_redis_cli, mesh_with_resp};
use support::Harness;

fn have_python_redis() -> bool {
    Command::new("python3")
        .args(["-c", "import redis"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `redis_py.py` against two agents with `protocol` (2 or 3).
fn python_checks(protocol: u8) {
    if !have_python_redis() {
        eprintln!(
            "SKIPPED: the Python redis package is not installed (python3 -m pip install redis)"
        );
        return;
    }
    let mut h = Harness::new(&format!("cache-resp-py{protocol}"));
    let ports = mesh_with_resp(&mut h, 2);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cache_util/redis_py.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(ports[0].to_string())
        .arg(ports[1].to_string())
        .arg(protocol.to_string())
        .output()
        .expect("running python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python redis checks (RESP{protocol}) failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_redis_client_sees_one_cache_and_pubsub() {
    python_checks(2);
}

#[test]
fn python_redis_client_over_resp3_sees_one_cache_and_pubsub() {
    python_checks(3);
}

/// `redis-cli -3 --no-raw ARGS...` against `port` (the handshake is
/// `HELLO 3`; `--no-raw` shows the reply's RESP3 types): its output.
fn redis3(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-3", "--no-raw", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn redis_cli_speaks_resp3() {
    if !have_redis_cli() {
        eprintln!("SKIPPED: redis-cli is not installed (apt install redis-tools)");
        return;
    }
    let mut h = Harness::new("cache-resp3-cli");
    let ports = mesh_with_resp(&mut h, 2);
    assert_eq!(redis3(ports[0], &["SET", "k3", "v"]), "OK");
    assert_eq!(redis3(ports[1], &["GET", "k3"]), "\"v\"");
    assert_eq!(redis3(ports[1], &["GET", "absent"]), "(nil)");
    // A map (`N# key => value`), not an array (`N) value`).
    let hello = redis3(ports[1], &["HELLO", "3"]);
    assert!(hello.contains("\"proto\" => (integer) 3"), "{hello}");
    assert_eq!(redis3(ports[0], &["CONFIG", "GET", "x"]), "(empty hash)");
    assert_eq!(
        redis3(ports[0], &["HELLO", "4"]),
        "(error) NOPROTO unsupported protocol version"
    );
}
