//! The Python `redis` package (a real client other than `redis-cli`)
//! against two agents' Redis protocol: SET/GET across nodes, `SET k v EX
//! 1` then expiry, PUBLISH/SUBSCRIBE across nodes, and an unsupported
//! command's clear error. The checks are in `cache_util/redis_py.py`.
//! CI installs the package (`.ci/run`); without it the test says so and
//! skips.

mod cache_util;
mod support;

use std::process::Command;

use cache_util::mesh_with_resp;
use support::Harness;

fn have_python_redis() -> bool {
    Command::new("python3")
        .args(["-c", "import redis"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn python_redis_client_sees_one_cache_and_pubsub() {
    if !have_python_redis() {
        eprintln!(
            "SKIPPED: the Python redis package is not installed (python3 -m pip install redis)"
        );
        return;
    }
    let mut h = Harness::new("cache-resp-py");
    let ports = mesh_with_resp(&mut h, 2);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cache_util/redis_py.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(ports[0].to_string())
        .arg(ports[1].to_string())
        .output()
        .expect("running python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python redis checks failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
