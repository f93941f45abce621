//! What the cache and messaging tests share: a mesh whose agents all
//! serve the Redis protocol, and `redis-cli` against one of them.
// Each test binary uses part of it.
#![allow(dead_code)]

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::support::{Harness, Opts, free_port, myco};

/// Starts `n` agents `n1..nN` like [`Harness::mesh`], each with `--resp`
/// on a free port; returns those ports.
pub fn mesh_with_resp(h: &mut Harness, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut key_file = None;
    for k in 1..=n {
        let port = free_port();
        ports.push(port);
        let opts = Opts {
            join: if k == 1 { vec![] } else { vec![0] },
            key_file: key_file.clone(),
            args: vec!["--resp".into(), format!("127.0.0.1:{port}")],
            ..Opts::default()
        };
        h.start(&format!("n{k}"), opts);
        if k == 1 {
            let out = myco(&[
                "cluster",
                "key",
                "--data-dir",
                h.agent(0).dir.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "myco cluster key failed");
            let path = h.root.join("cluster.key");
            fs::write(&path, &out.stdout).unwrap();
            key_file = Some(path);
        }
    }
    let names: Vec<String> = (1..=n).map(|k| format!("n{k}")).collect();
    let idx: Vec<usize> = (0..n).collect();
    h.wait_all_alive(&idx, &names, Duration::from_secs(30));
    ports
}

/// Whether `redis-cli` is installed (Debian's `redis-tools`).
pub fn have_redis_cli() -> bool {
    Command::new("redis-cli").arg("--version").output().is_ok()
}

/// `redis-cli -p PORT ARGS...`: its output, trimmed.
pub fn redis(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
