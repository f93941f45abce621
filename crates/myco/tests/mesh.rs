//! End-to-end tests of mesh membership, datagram hygiene, API auth and CLI
//! errors, against real `myco agent` processes on loopback.
//!
//! Every test has its own temp dir and ports, so they run in parallel.
//! `--nocapture` shows the timings they measure.

mod support;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use myco_proto::api::NodeInfo;
use myco_proto::{ClusterKey, Envelope, KeyRing, NodeId};
use serde_json::Value;
use support::{DEADLINE, Harness, Opts, myco, wait_for};

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|k| format!("n{k}")).collect()
}

fn node_id(dir: &Path) -> String {
    let out = myco(&["id", "--data-dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "myco id failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!id.is_empty(), "myco id printed nothing");
    id
}

/// A small xorshift generator: random enough for junk datagrams, no dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// `min` to `min + extra - 1` random bytes.
    fn junk(&mut self, min: usize, extra: usize) -> Vec<u8> {
        let n = min + self.below(extra);
        self.bytes(n)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn three_agents_form_a_mesh() {
    let mut h = Harness::new("form");
    let took = h.mesh(3);
    eprintln!("3-node mesh formed in {took:?}");

    for i in 0..3 {
        let states = h.states(i).unwrap();
        let want: BTreeMap<String, String> =
            names(3).into_iter().map(|n| (n, "alive".into())).collect();
        assert_eq!(states, want, "{} sees", h.agent(i).name);
        // Each agent lists itself once, first or not, and the ids are distinct.
        let nodes = h.nodes(i).unwrap();
        let selves: Vec<&NodeInfo> = nodes.iter().filter(|m| m.is_self).collect();
        assert_eq!(
            selves.len(),
            1,
            "{} marks one member as itself",
            h.agent(i).name
        );
        assert_eq!(selves[0].name, h.agent(i).name);
        let mut ids: Vec<&str> = nodes.iter().map(|m| m.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "distinct ids in {nodes:?}");
        // Each member's id is what `myco id` reads from its data dir.
        for a in &h.agents {
            let id = node_id(&a.dir);
            assert!(
                nodes.iter().any(|m| m.id == id && m.name == a.name),
                "{} does not list {} with id {id}: {nodes:?}",
                h.agent(i).name,
                a.name
            );
        }
    }

    // The CLI, as a process, against the second node's API.
    let api = h.agent(1).api_url();
    let out = myco(&["nodes", "--json", "--api", &api]);
    assert!(
        out.status.success(),
        "myco nodes --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "myco nodes --json printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let list = support::member_list(&v);
    assert_eq!(list.len(), 3, "myco nodes --json: {v}");
    let mut listed: Vec<&str> = list.iter().filter_map(|m| m["name"].as_str()).collect();
    listed.sort();
    assert_eq!(listed, ["n1", "n2", "n3"]);
    assert!(list.iter().all(|m| m["state"] == "alive"), "{v}");

    // `myco status --json` agrees.
    let out = myco(&["status", "--json", "--api", &api]);
    assert!(out.status.success());
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["cluster"]["alive"], 3, "{st}");
    assert_eq!(st["node"]["name"], "n2", "{st}");
}

#[test]
fn killed_agent_is_seen_down_and_comes_back_with_its_identity() {
    let mut h = Harness::new("kill");
    h.mesh(3);
    let dir = h.agent(2).dir.clone();
    let id_before = node_id(&dir);

    let t0 = Instant::now();
    h.kill(2);
    let ((), took) = wait_for(
        "n1 and n2 to see the SIGKILLed n3 down (or forget it)",
        Duration::from_secs(5),
        || {
            for i in 0..2 {
                let s = h.state_of(i, "n3")?;
                if s != "down" && s != "absent" {
                    return Err(format!("{} sees n3 {s}", h.agent(i).name));
                }
            }
            Ok(())
        },
    );
    eprintln!(
        "SIGKILLed n3 seen down by both peers after {:?} (poll every {:?})",
        took,
        support::POLL
    );
    assert!(t0.elapsed() < Duration::from_secs(6));
    // The survivors still see each other alive.
    for i in 0..2 {
        assert_eq!(h.state_of(i, "n1").unwrap(), "alive");
        assert_eq!(h.state_of(i, "n2").unwrap(), "alive");
    }

    // Same data dir: same identity.
    assert_eq!(node_id(&dir), id_before, "myco id changed while stopped");
    h.restart(2);
    assert_eq!(node_id(&dir), id_before, "myco id changed across a restart");
    let health = h.agent(2).anon().health().unwrap();
    assert_eq!(health.node, id_before, "{health:?}");
    let back = h.wait_all_alive(&[0, 1, 2], &names(3), DEADLINE);
    eprintln!("restarted n3 seen alive by all after {back:?}");
    for i in 0..3 {
        let nodes = h.nodes(i).unwrap();
        assert_eq!(nodes.len(), 3, "{} lists {nodes:?}", h.agent(i).name);
        assert!(
            nodes.iter().any(|m| m.id == id_before && m.name == "n3"),
            "{} does not list n3 under its old id: {nodes:?}",
            h.agent(i).name
        );
    }
}

#[test]
fn sigterm_leaves_the_mesh_and_exits_zero() {
    let mut h = Harness::new("term");
    h.mesh(3);
    let t0 = Instant::now();
    h.terminate(2);
    let ((), seen) = wait_for("n1 and n2 to see n3 left", Duration::from_secs(5), || {
        for i in 0..2 {
            let s = h.state_of(i, "n3")?;
            if s != "left" {
                return Err(format!("{} sees n3 {s}", h.agent(i).name));
            }
        }
        Ok(())
    });
    let left = Duration::from_secs(5).saturating_sub(t0.elapsed());
    let (status, _) = h
        .wait_exit(2, left.max(Duration::from_millis(100)))
        .unwrap_or_else(|| panic!("n3 still running {:?} after SIGTERM", t0.elapsed()));
    let exited = t0.elapsed();
    eprintln!("after SIGTERM: seen left in {seen:?}, exited {status} in {exited:?}");
    assert!(status.success(), "n3 exited with {status}");
    assert!(exited <= Duration::from_secs(5), "exit took {exited:?}");
    // It stays left (not down) a while later, and the others stay alive.
    // Checked on every poll for 1.5 s: past the suspect-to-down timeout.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for i in 0..2 {
            let st = h.states(i).unwrap();
            assert_eq!(st.get("n3").map(String::as_str), Some("left"), "{st:?}");
            assert_eq!(st.get("n1").map(String::as_str), Some("alive"), "{st:?}");
            assert_eq!(st.get("n2").map(String::as_str), Some("alive"), "{st:?}");
        }
        std::thread::sleep(support::POLL);
    }
}

#[test]
fn agent_with_another_cluster_key_stays_out() {
    let mut h = Harness::new("foreign");
    h.mesh(3);
    // No --cluster-key-file: it generates its own key.
    let o = h.start(
        "outsider",
        Opts {
            join: vec![0],
            key_file: None,
            args: Vec::new(),
            ..Opts::default()
        },
    );
    let outsider_id = node_id(&h.agent(o).dir);
    let mesh_key = h.agent(0).anon().status().unwrap().cluster_key_id;
    let own_key = h.agent(o).anon().status().unwrap().cluster_key_id;
    assert_ne!(mesh_key, own_key, "the outsider should have its own key");

    // For 3 s, no mesh member lists the outsider as anything but absent/down.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for i in 0..3 {
            let nodes = h.nodes(i).unwrap();
            let found: Vec<&NodeInfo> = nodes
                .iter()
                .filter(|m| m.name == "outsider" || m.id == outsider_id)
                .collect();
            assert!(
                found
                    .iter()
                    .all(|m| m.state != "alive" && m.state != "suspect"),
                "{} lets the outsider in: {found:?}",
                h.agent(i).name
            );
            assert_eq!(nodes.len(), 3, "{} lists {nodes:?}", h.agent(i).name);
        }
        let own = h.nodes(o).unwrap();
        let alive_peers: Vec<&NodeInfo> = own
            .iter()
            .filter(|m| !m.is_self && m.state == "alive")
            .collect();
        assert!(
            alive_peers.is_empty(),
            "the outsider sees {alive_peers:?} alive"
        );
        std::thread::sleep(support::POLL);
    }
    h.wait_all_alive(&[0, 1, 2], &names(3), Duration::from_secs(1));

    let unknown: f64 = (0..3)
        .map(|i| {
            h.dropped(i)
                .unwrap()
                .get("unknown_key")
                .copied()
                .unwrap_or(0.0)
        })
        .sum();
    assert!(
        unknown > 0.0,
        "no unknown_key drops counted by the mesh: {:?}",
        (0..3).map(|i| h.dropped(i).unwrap()).collect::<Vec<_>>()
    );
    eprintln!("mesh counted {unknown} unknown_key drops from the outsider in 3 s");
}

/// Sends `batch` and waits until agent `i` counted each as `reason`.
fn send_counted(
    h: &Harness,
    i: usize,
    sock: &UdpSocket,
    reason: &str,
    batch: &[Vec<u8>],
    counted: &mut BTreeMap<String, f64>,
) {
    let target = h.agent(i).mesh_addr();
    // Small bursts, each confirmed before the next, so the kernel's socket
    // buffer never overflows and every datagram is accounted for.
    for chunk in batch.chunks(20) {
        for d in chunk {
            sock.send_to(d, &target).expect("sending a datagram");
        }
        let want = counted.get(reason).copied().unwrap_or(0.0) + chunk.len() as f64;
        wait_for(
            &format!("{} to count {want} {reason} drops", h.agent(i).name),
            Duration::from_secs(5),
            || {
                let d = h.dropped(i)?;
                let n = d.get(reason).copied().unwrap_or(0.0);
                if n >= want {
                    Ok(())
                } else {
                    Err(format!("{d:?}"))
                }
            },
        );
        *counted.entry(reason.to_string()).or_insert(0.0) += chunk.len() as f64;
    }
}

#[test]
fn hostile_datagrams_are_counted_and_harmless() {
    let mut h = Harness::new("garbage");
    h.mesh(3);
    let before = h.dropped(0).unwrap();
    let mut expect = before.clone();
    let mut rng = Rng::new();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let key_text = support::read(&h.key_file());
    let ring = KeyRing::parse(&key_text).expect("parsing the cluster key file");
    let key_id = ClusterKey::parse(key_text.lines().find(|l| !l.trim().is_empty()).unwrap())
        .unwrap()
        .id()
        .0;
    let status_key = h.agent(0).anon().status().unwrap().cluster_key_id;
    assert_eq!(status_key, hex(&key_id), "the key id in /v1/status");
    let mut sent = 0usize;

    // 200 random datagrams that do not start with the magic.
    let random: Vec<Vec<u8>> = (0..200)
        .map(|_| {
            let mut d = rng.junk(2, 600);
            if d[0] == b'M' {
                d[0] = b'X';
            }
            d
        })
        .collect();
    send_counted(&h, 0, &sock, "bad_magic", &random, &mut expect);
    sent += random.len();

    // Truncated real-looking ones: the magic and version, then too little.
    let short: Vec<Vec<u8>> = (0..40)
        .map(|k| {
            let mut d = b"MY\x01".to_vec();
            d.extend(rng.bytes(k % 44));
            d
        })
        .chain([b"M".to_vec(), Vec::new()])
        .collect();
    send_counted(&h, 0, &sock, "too_short", &short, &mut expect);
    sent += short.len();

    // Oversized: 9000 bytes (arrives truncated to the buffer) and one byte over.
    let mut big = b"MY\x01".to_vec();
    big.extend(rng.bytes(9000 - 3));
    let mut just_over = b"MY\x01".to_vec();
    just_over.extend(rng.bytes(myco_proto::MAX_DATAGRAM + 1 - 3));
    send_counted(&h, 0, &sock, "oversize", &[big, just_over], &mut expect);
    sent += 2;

    // A well-formed header under a key id nobody holds.
    let other_id = [key_id[0] ^ 0xff, key_id[1], key_id[2], key_id[3]];
    let unknown: Vec<Vec<u8>> = (0..20)
        .map(|_| {
            let mut d = b"MY\x01".to_vec();
            d.extend(other_id);
            d.extend(rng.junk(24 + 16 + 1, 200));
            d
        })
        .collect();
    send_counted(&h, 0, &sock, "unknown_key", &unknown, &mut expect);
    sent += unknown.len();

    // The right key id with a forged body and tag.
    let forged: Vec<Vec<u8>> = (0..20)
        .map(|_| {
            let mut d = b"MY\x01".to_vec();
            d.extend(key_id);
            d.extend(rng.junk(24 + 16 + 1, 200));
            d
        })
        .collect();
    send_counted(&h, 0, &sock, "unauthentic", &forged, &mut expect);
    sent += forged.len();

    // A real envelope (sealed with the cluster key) around junk: undecodable;
    // the very same bytes again: a replay.
    let sender = NodeId(rng.next().to_be_bytes());
    let sealed = Envelope::seal(&ring, sender, 1 + rng.next() % 1000, 7, &[0xff; 32]);
    send_counted(
        &h,
        0,
        &sock,
        "undecodable",
        std::slice::from_ref(&sealed),
        &mut expect,
    );
    send_counted(&h, 0, &sock, "replay", &[sealed], &mut expect);
    sent += 2;

    let after = h.dropped(0).unwrap();
    eprintln!("dropped before {before:?}\ndropped after  {after:?}");
    for (reason, want) in &expect {
        let got = after.get(reason).copied().unwrap_or(0.0);
        assert!(got >= *want, "{reason}: counted {got}, want >= {want}");
    }
    let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
    assert!(
        total(&after) - total(&before) >= sent as f64,
        "{sent} sent, {} counted",
        total(&after) - total(&before)
    );

    // The node is unharmed: serving, in the mesh, seen alive by the others.
    assert!(h.running(0), "n1 died");
    h.agent(0)
        .anon()
        .health()
        .expect("n1's /health after the flood");
    h.wait_all_alive(&[0, 1, 2], &names(3), Duration::from_secs(5));
    // And it stays so for a while after (a hold period, checked throughout).
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        for i in 0..3 {
            let st = h.states(i).unwrap();
            assert!(
                st.values().all(|s| s == "alive") && st.len() == 3,
                "{} sees {st:?} after the flood",
                h.agent(i).name
            );
        }
        std::thread::sleep(support::POLL);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn api_mutations_and_the_cluster_key_need_the_token() {
    let mut h = Harness::new("auth");
    let a = h.start("solo", Opts::default());
    let anon = h.agent(a).anon();
    let token = h.agent(a).token();
    assert!(token.len() >= 16, "a weak API token: {token:?}");
    let peer = format!("{{\"addr\":\"127.0.0.1:{}\"}}", support::free_port());
    let json = ("Content-Type", "application/json");

    let r = anon
        .raw("POST", "/v1/peers", &[json], peer.as_bytes())
        .unwrap();
    assert_eq!(
        r.status,
        401,
        "POST /v1/peers without a token: {}",
        r.text()
    );
    let wrong = format!("Bearer {}x", token);
    let r = anon
        .raw(
            "POST",
            "/v1/peers",
            &[json, ("Authorization", &wrong)],
            peer.as_bytes(),
        )
        .unwrap();
    assert_eq!(
        r.status,
        401,
        "POST /v1/peers with a wrong token: {}",
        r.text()
    );
    let bearer = format!("Bearer {token}");
    let r = anon
        .raw(
            "POST",
            "/v1/peers",
            &[json, ("Authorization", &bearer)],
            peer.as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 202, "POST /v1/peers with the token: {}", r.text());
    let r = anon
        .raw(
            "POST",
            "/v1/peers",
            &[json, ("Authorization", &bearer)],
            b"{not json",
        )
        .unwrap();
    assert_eq!(
        r.status,
        400,
        "POST /v1/peers with a bad body: {}",
        r.text()
    );
    // The typed call with the token joins too.
    let joining = h
        .agent(a)
        .client()
        .peer_add(&format!("127.0.0.1:{}", support::free_port()))
        .unwrap();
    assert!(joining.joining.starts_with("127.0.0.1:"), "{joining:?}");

    let on_disk = support::read(&h.agent(a).dir.join("cluster.key"));
    let r = anon.raw("GET", "/v1/cluster/key", &[], b"").unwrap();
    assert_eq!(
        r.status,
        401,
        "GET /v1/cluster/key without a token: {}",
        r.text()
    );
    assert!(!r.text().contains(on_disk.trim()), "the 401 leaks the key");
    // Without the token the client says how to pass one.
    let e = anon.cluster_key().unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("--token"), "{e}");
    let key_line = |t: &str| {
        t.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
    };
    let r = anon
        .raw("GET", "/v1/cluster/key", &[("Authorization", &bearer)], b"")
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "GET /v1/cluster/key with the token: {}",
        r.text()
    );
    assert_eq!(key_line(&r.text()), key_line(&on_disk));
    let typed = h.agent(a).client().cluster_key().unwrap();
    assert_eq!(key_line(&typed), key_line(&on_disk));

    // Reads stay open on loopback; /health and /metrics always.
    anon.nodes().expect("GET /v1/nodes without a token");
    anon.health().expect("GET /health without a token");
    anon.metrics().expect("GET /metrics without a token");
}

#[test]
fn cli_errors_are_one_line_and_nonzero() {
    let out = myco(&["--api", "http://127.0.0.1:1", "status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "status against a dead API succeeded");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {stderr:?}");
    assert!(lines[0].starts_with("error:"), "stderr: {stderr:?}");
    assert!(
        lines[0].contains("is an agent running?"),
        "no advice in {stderr:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    let missing = Path::new("/nonexistent");
    assert!(!missing.exists(), "/nonexistent exists on this machine");
    let out = myco(&["id", "--data-dir", "/nonexistent"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "myco id on a missing dir succeeded");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr is not one line: {stderr:?}");
    assert!(lines[0].starts_with("error:"), "stderr: {stderr:?}");
    assert!(!missing.exists(), "myco id created the data dir");
}
