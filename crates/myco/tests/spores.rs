//! End-to-end tests of spores against real `myco agent` processes on
//! loopback: keys, packing and verification through the CLI, a push to one
//! node reaching the whole mesh, refusals (tampered, untrusted, token-less),
//! file modes surviving the trip, fetching past a dead holder and resuming a
//! partial download, and a larger spore.
//!
//! Every test has its own temp dir and ports, so they run in parallel.
//! `--nocapture` shows the figures they measure.
//!
//! Why one file of this length: every scenario starts its own mesh and
//! reads top to bottom on its own, and they share one test binary (each
//! integration test file is a separate link on a 2-core CI machine).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use myco_client::RawResponse;
use myco_proto::api::SporeInfo;
use serde_json::Value;
use support::{Agent, Harness, Opts, cli, myco, ok, s, wait_for};

/// How long a spore pushed to one node may take to be listed by the others.
const LISTED: Duration = Duration::from_secs(10);

/// How long one download (possibly fetching from peers) may take.
const FETCH: Duration = Duration::from_secs(30);

/// The chunk size of peer-to-peer transfers (`myco_proto::blob::CHUNK`).
const CHUNK: usize = 1024 * 1024;

// ----- SHA-256, written out so the tests do not trust the product's hashing -----

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// Lower-case hex SHA-256 of `data`.
fn sha256_hex(data: &[u8]) -> String {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut tail = data[data.len() - data.len() % 64..].to_vec();
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    let full = &data[..data.len() - data.len() % 64];
    for block in full.chunks_exact(64).chain(tail.chunks_exact(64)) {
        let mut w = [0u32; 64];
        for (slot, word) in w.iter_mut().zip(block.chunks_exact(4)) {
            *slot = u32::from_be_bytes(word.try_into().expect("4 bytes"));
        }
        for i in 16..64 {
            let (a, b) = (w[i - 15], w[i - 2]);
            let s0 = a.rotate_right(7) ^ a.rotate_right(18) ^ (a >> 3);
            let s1 = b.rotate_right(17) ^ b.rotate_right(19) ^ (b >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for (k, wi) in K.iter().zip(w) {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// `sha256:<hex>` of `data`: what the digest of a spore with these bytes must be.
fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

#[test]
fn sha256_helper_matches_known_answers() {
    assert_eq!(
        sha256_hex(b""),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
    assert_eq!(
        sha256_hex(&[b'a'; 1_000_000]),
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    );
}

/// `n` pseudo-random (incompressible) bytes; the same `seed` gives the same bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

// ----- the CLI -----

/// A publisher key pair made by `myco key gen`.
struct Publisher {
    key: PathBuf,
    pubkey: PathBuf,
    /// The public key, 64 hex digits.
    hex: String,
}

#[track_caller]
fn keygen(root: &Path, name: &str) -> Publisher {
    let key = root.join(name);
    ok(&myco(&["key", "gen", "--out", s(&key)]), "myco key gen");
    let pubkey = PathBuf::from(format!("{}.pub", key.display()));
    let hex = fs::read_to_string(&pubkey)
        .unwrap_or_else(|e| panic!("key gen wrote no {}: {e}", pubkey.display()))
        .trim()
        .to_string();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{} is not 64 hex digits: {hex:?}",
        pubkey.display()
    );
    let secret_mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        secret_mode & 0o077,
        0,
        "the secret key is readable by others"
    );
    Publisher { key, pubkey, hex }
}

/// The script every test workload runs.
const SCRIPT: &[u8] = b"#!/bin/sh\necho hello from a spore\n";
const GREETING: &[u8] = b"greetings, mycelium\n";

/// A workload dir: `run.sh` (0755), `data/greeting.txt` (0644) and `extra`
/// files as (relative path, contents, mode).
fn workload(root: &Path, name: &str, extra: &[(&str, &[u8], u32)]) -> PathBuf {
    let dir = root.join(format!("src-{name}"));
    let files: Vec<(&str, &[u8], u32)> = [
        ("run.sh", SCRIPT, 0o755),
        ("data/greeting.txt", GREETING, 0o644),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    for (path, data, mode) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// A packed spore: its file, bytes and digest.
struct Spore {
    file: PathBuf,
    bytes: Vec<u8>,
    digest: String,
}

/// `myco spore pack DIR --name N --version V --cmd ./run.sh --key K --out ROOT/N-V.spore`;
/// checks that the digest it prints is the SHA-256 of the file it wrote.
#[track_caller]
fn pack(root: &Path, dir: &Path, name: &str, version: &str, publisher: &Publisher) -> Spore {
    let file = root.join(format!("{name}-{version}.spore"));
    let out = ok(
        &myco(&[
            "spore",
            "pack",
            s(dir),
            "--name",
            name,
            "--version",
            version,
            "--cmd",
            "./run.sh",
            "--key",
            s(&publisher.key),
            "--out",
            s(&file),
        ]),
        "myco spore pack",
    );
    let bytes = fs::read(&file).unwrap_or_else(|e| panic!("pack wrote no {}: {e}", file.display()));
    let digest = digest_of(&bytes);
    let printed = out.split_whitespace().next().unwrap_or("");
    assert_eq!(
        printed, digest,
        "pack printed {out:?}, but the file's SHA-256 is {digest}"
    );
    Spore {
        file,
        bytes,
        digest,
    }
}

/// `myco spore verify FILE [--pubkey P]`.
fn verify(file: &Path, pubkey: Option<&Path>) -> Output {
    let mut args = vec!["spore", "verify", s(file)];
    if let Some(p) = pubkey {
        args.extend(["--pubkey", s(p)]);
    }
    myco(&args)
}

/// `myco spore push FILE --json` against `a`; the digest it reports.
#[track_caller]
fn push_cli(a: &Agent, file: &Path) -> String {
    let out = ok(
        &cli(a, &["spore", "push", s(file), "--json"]),
        "myco spore push",
    );
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("spore push --json printed no JSON ({e}): {out:?}"));
    v["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("spore push --json gave no digest: {out}"))
        .to_string()
}

/// `myco trust add PUB` against `a`.
#[track_caller]
fn trust_add(a: &Agent, p: &Publisher) {
    let out = ok(
        &cli(a, &["trust", "add", s(&p.pubkey), "--comment", "tests"]),
        "myco trust add",
    );
    assert!(out.contains(&p.hex), "trust add printed {out:?}");
}

/// `myco trust list --json` against `a`: the trusted keys.
#[track_caller]
fn trust_list(a: &Agent) -> Vec<String> {
    let out = ok(&cli(a, &["trust", "list", "--json"]), "myco trust list");
    let v: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("trust list --json printed no JSON ({e}): {out:?}"));
    v.as_array()
        .unwrap_or_else(|| panic!("trust list --json is not a list: {out}"))
        .iter()
        .map(|k| k["key"].as_str().unwrap_or("").to_string())
        .collect()
}

// ----- the API -----

/// `POST /v1/spores` with `body` and, if given, `token`, sent as it is
/// (these tests push tampered files and wrong tokens): the answer,
/// whatever its status.
fn push_http(a: &Agent, body: &[u8], token: Option<&str>) -> RawResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    a.anon()
        .with_timeout(FETCH)
        .raw("POST", "/v1/spores", &headers, body)
        .unwrap_or_else(|e| panic!("POST /v1/spores to {}: {e}", a.name))
}

/// `GET /v1/spores` of `a`.
fn spores(a: &Agent) -> Result<Vec<SporeInfo>, String> {
    a.anon().spores().map_err(|e| format!("{}: {e}", a.name))
}

/// The entry for `digest` in `a`'s listing; `Err` while there is none.
fn listed(a: &Agent, digest: &str) -> Result<SporeInfo, String> {
    let list = spores(a)?;
    let found: Vec<&SporeInfo> = list.iter().filter(|e| e.digest == digest).collect();
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!("{} does not list {digest}: {list:?}", a.name)),
        many => panic!("{} lists {digest} {} times: {list:?}", a.name, many.len()),
    }
}

/// The holder ids of a listing entry, in the order given.
fn holders(entry: &SporeInfo) -> Vec<String> {
    entry.holders.clone()
}

/// Waits until `a` lists `digest` with every id in `want` among its holders
/// and `local` as given; returns the entry and the time it took.
#[track_caller]
fn await_listed(a: &Agent, digest: &str, want: &[&str], local: bool) -> (SporeInfo, Duration) {
    wait_for(
        &format!(
            "{} to list {digest} held by {want:?} (local {local})",
            a.name
        ),
        LISTED,
        || {
            let e = listed(a, digest)?;
            let h = holders(&e);
            if want.iter().all(|w| h.iter().any(|x| x == w)) && e.local == local {
                Ok(e)
            } else {
                Err(format!("{e:?}"))
            }
        },
    )
}

/// Agent `i`'s node id, as its own `/v1/nodes` says.
fn node_id(h: &Harness, i: usize) -> String {
    let name = &h.agent(i).name;
    let nodes = h.nodes(i).expect("/v1/nodes");
    let me: Vec<_> = nodes.iter().filter(|m| m.name == *name).collect();
    assert_eq!(me.len(), 1, "{name} lists itself {} times", me.len());
    let id = me[0].id.clone();
    assert!(!id.is_empty(), "{name} has no id: {:?}", me[0]);
    id
}

/// `GET /v1/spores/{which}` on `a` with the token (so the agent may fetch
/// it from a holder), which must answer 200; the bytes and time.
#[track_caller]
fn download(a: &Agent, which: &str) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let mut bytes = Vec::new();
    let n = myco_client::Client::new(&a.api_url())
        .with_token(Some(a.token()))
        .with_timeout(FETCH)
        .spore_download(which, &mut bytes)
        .unwrap_or_else(|e| panic!("GET /v1/spores/{which} on {}: {e}", a.name));
    assert_eq!(n, bytes.len() as u64, "bytes written by spore_download");
    (bytes, t0.elapsed())
}

/// `/metrics` of `a`.
fn metrics(a: &Agent) -> String {
    a.anon()
        .metrics()
        .unwrap_or_else(|e| panic!("/metrics of {}: {e}", a.name))
}

/// `myco_spores_refused_total{reason=...}` of a scrape, by reason.
fn refused(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("myco_spores_refused_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once('}').expect("a label set ends with }");
        let reason = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("reason=\""))
            .map(|r| r.trim_end_matches('"').to_string())
            .unwrap_or_else(|| panic!("no reason label in {line:?}"));
        let value: f64 = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        *out.entry(reason).or_default() += value as u64;
    }
    out
}

/// A single un-labelled counter of a scrape.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no {name} in the scrape")) as u64
}

/// The `.spore` files and leftovers in `a`'s spore store.
fn store_files(a: &Agent) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [a.dir.join("spores"), a.dir.join("spores").join("tmp")] {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().is_file() {
                out.push(e.path().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// `bytes` with the bits `0x40` of byte `at` flipped.
fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x40;
    b
}

// ----- the tests -----

/// Pack and push to one node through the CLI: every node lists it with node
/// 1 as a holder, another node downloads exactly those bytes (by digest and
/// by NAME@VERSION) and then holds it too, and the download verifies.
#[test]
fn push_to_one_node_reaches_all() {
    let mut h = Harness::new("spores-reach");
    let formed = h.mesh(3);
    let ids: Vec<String> = (0..3).map(|i| node_id(&h, i)).collect();
    let (n1, n2, n3) = (h.agent(0), h.agent(1), h.agent(2));

    let publisher = keygen(&h.root, "pub.key");
    let dir = workload(&h.root, "hello", &[]);
    let spore = pack(&h.root, &dir, "hello", "1.0.0", &publisher);
    let v = ok(
        &verify(&spore.file, Some(&publisher.pubkey)),
        "spore verify of a fresh spore",
    );
    assert!(v.contains(&spore.digest), "verify printed {v:?}");
    let inspected: Value = serde_json::from_str(&ok(
        &myco(&["spore", "inspect", s(&spore.file), "--json"]),
        "spore inspect",
    ))
    .expect("inspect --json prints JSON");
    assert_eq!(inspected["name"], "hello");
    assert_eq!(inspected["version"], "1.0.0");
    assert_eq!(inspected["command"], "./run.sh");
    assert_eq!(inspected["publisher"], publisher.hex.as_str());

    trust_add(n1, &publisher);
    assert_eq!(trust_list(n1), vec![publisher.hex.clone()]);

    let t0 = Instant::now();
    let digest = push_cli(n1, &spore.file);
    let pushed = t0.elapsed();
    assert_eq!(digest, spore.digest, "push answered another digest");
    let (e1, _) = await_listed(n1, &digest, &[&ids[0]], true);
    assert_eq!(e1.name, "hello");
    assert_eq!(e1.version, "1.0.0");
    assert_eq!(e1.size, spore.bytes.len() as u64);
    assert_eq!(e1.publisher, publisher.hex);
    let (e2, on2) = await_listed(n2, &digest, &[&ids[0]], false);
    let (_, on3) = await_listed(n3, &digest, &[&ids[0]], false);
    assert_eq!(e2.name, "hello");
    assert_eq!(holders(&e2), vec![ids[0].clone()], "only n1 holds it yet");

    // Issue 9: an unauthenticated read may make n3 fetch only through a
    // bounded gate (one at a time, one start per 10 s; 429 past it, as the
    // unit test of `spores::anon` shows with a clock it controls). The
    // contract's anonymous download of a listed spore goes through it.
    let mut anon_bytes = Vec::new();
    n3.anon()
        .with_timeout(FETCH)
        .spore_download(&digest, &mut anon_bytes)
        .expect("a first anonymous download through the bounded gate");
    assert_eq!(digest_of(&anon_bytes), digest, "n3 served other bytes");
    let second = n3
        .anon()
        .with_timeout(FETCH)
        .spore_download("hello@1.0.0", &mut Vec::new());
    // Once local, it is served to anyone, by name too, with no fetch.
    assert!(
        second.is_ok(),
        "a local spore by name, anonymously: {second:?}"
    );

    // Node 3 fetches it from node 1 (asked with the token) and then holds it itself.
    let (bytes, took3) = download(n3, &digest);
    assert_eq!(
        digest_of(&bytes),
        digest,
        "n3 served {} bytes that are not the spore",
        bytes.len()
    );
    assert!(bytes == spore.bytes, "n3 served other bytes");
    await_listed(n3, &digest, &[&ids[0], &ids[2]], true);
    let (_, n3_known_on1) = await_listed(n1, &digest, &[&ids[0], &ids[2]], true);
    let downloaded = h.root.join("downloaded.spore");
    fs::write(&downloaded, &bytes).unwrap();
    let v = ok(
        &verify(&downloaded, Some(&publisher.pubkey)),
        "spore verify of the download",
    );
    assert!(v.contains(&digest), "verify printed {v:?}");

    // By name and version, from node 2.
    let (by_name, took2) = download(n2, "hello@1.0.0");
    assert!(
        by_name == spore.bytes,
        "hello@1.0.0 from n2 is not the spore ({})",
        digest_of(&by_name)
    );
    await_listed(n2, &digest, &[&ids[0], &ids[1]], true);

    // Trust replicates, and pushing the same spore again elsewhere is
    // idempotent: same digest, still one entry.
    wait_for("n2 to trust the publisher", LISTED, || {
        let keys = trust_list(n2);
        if keys == vec![publisher.hex.clone()] {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    });
    let r = push_http(n2, &spore.bytes, Some(&n2.token()));
    assert_eq!(r.status, 201, "re-push to n2 answered: {}", r.text());
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).expect("JSON")["digest"],
        digest.as_str()
    );
    let (again, _) = await_listed(n2, &digest, &[&ids[0], &ids[1], &ids[2]], true);
    assert_eq!(holders(&again).len(), 3, "holders: {again:?}");

    // The CLI listing agrees.
    let out = ok(&cli(n2, &["spores", "--json"]), "myco spores --json");
    let list: Value = serde_json::from_str(&out).expect("spores --json prints JSON");
    let mine: Vec<&Value> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["digest"] == digest.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "myco spores --json: {out}");
    assert_eq!(mine[0]["local"], true);

    // Unknown names and digests are 404s, not fetch attempts that hang.
    for which in [
        "hello@9.9.9".to_string(),
        format!("sha256:{}", "0".repeat(64)),
    ] {
        let r = n3
            .anon()
            .with_timeout(FETCH)
            .spore_download(&which, &mut Vec::new());
        assert!(
            r.as_ref().is_err_and(|e| e.is_not_found()),
            "GET /v1/spores/{which}: {r:?}"
        );
    }

    println!(
        "mesh formed in {formed:?}; push {pushed:?}; listed on n2 after {on2:?}, n3 after {on3:?}; \
         n3 download (fetch) {took3:?}; n1 saw n3 as holder {n3_known_on1:?} later; \
         n2 download by name {took2:?}; {} bytes {digest}",
        spore.bytes.len()
    );
}

/// Tampered spores, an untrusted publisher and a token-less push are refused
/// and leave nothing behind; refusals are counted by reason; trusting the
/// publisher makes its push succeed and `trust remove` revokes that again.
#[test]
fn tampered_untrusted_and_tokenless_pushes_are_refused() {
    let mut h = Harness::new("spores-refused");
    h.mesh(2);
    let (n1, n2) = (h.agent(0), h.agent(1));
    let token = n1.token();
    let good_key = keygen(&h.root, "good.key");
    let other_key = keygen(&h.root, "other.key");
    let dir = workload(&h.root, "app", &[]);
    let good = pack(&h.root, &dir, "app", "1", &good_key);
    let other = pack(&h.root, &dir, "other", "1", &other_key);
    let other2 = pack(&h.root, &dir, "other", "2", &other_key);

    // Nothing trusted yet: every push is refused.
    let r = push_http(n1, &good.bytes, Some(&token));
    assert_eq!(
        r.status,
        403,
        "push with no trusted key answered: {}",
        r.text()
    );
    assert_eq!(refused(&metrics(n1)).get("untrusted"), Some(&1));

    trust_add(n1, &good_key);

    // One flipped byte in the manifest, the signature and the payload.
    let manifest_len = u32::from_be_bytes(good.bytes[10..14].try_into().unwrap()) as usize;
    let payload_at = 14 + manifest_len + 64;
    assert!(payload_at < good.bytes.len(), "the spore has a payload");
    let spots = [
        ("manifest, near the start", 14 + 20),
        ("manifest, middle", 14 + manifest_len / 2),
        ("signature", 14 + manifest_len + 10),
        ("payload, first byte", payload_at),
        ("payload, near the end", good.bytes.len() - 2),
        ("payload, last byte", good.bytes.len() - 1),
    ];
    for (what, at) in spots {
        let bad = flipped(&good.bytes, at);
        let file = h.root.join(format!("bad-{at}.spore"));
        fs::write(&file, &bad).unwrap();
        let v = verify(&file, Some(&good_key.pubkey));
        assert!(
            !v.status.success(),
            "a spore with a flipped byte in the {what} (offset {at}) verified: {}",
            String::from_utf8_lossy(&v.stdout)
        );
        assert!(
            !verify(&file, None).status.success(),
            "a spore with a flipped byte in the {what} verified without --pubkey"
        );
        let r = push_http(n1, &bad, Some(&token));
        assert_eq!(
            r.status,
            422,
            "push of a spore with a flipped byte in the {what} (offset {at}) answered: {}",
            r.text()
        );
        println!("flipped byte in the {what} (offset {at}): {}", r.text());
    }
    // The CLI reports a refused push as a failure.
    let bad_file = h.root.join(format!("bad-{payload_at}.spore"));
    let out = cli(n1, &["spore", "push", s(&bad_file)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("422"),
        "myco spore push of a tampered spore: {} {err}",
        out.status
    );
    let tampered = spots.len() as u64 + 1;

    // A validly signed spore from a publisher nobody trusts.
    let r = push_http(n1, &other.bytes, Some(&token));
    assert_eq!(
        r.status,
        403,
        "push from an untrusted publisher answered: {}",
        r.text()
    );
    assert!(
        r.text().contains(&other_key.hex),
        "the refusal does not name the publisher: {}",
        r.text()
    );

    // No token, or a wrong one.
    let r = push_http(n1, &good.bytes, None);
    assert_eq!(r.status, 401, "push without a token answered: {}", r.text());
    let r = push_http(n1, &good.bytes, Some("not-the-token"));
    assert_eq!(
        r.status,
        401,
        "push with a wrong token answered: {}",
        r.text()
    );

    // Nothing was kept or indexed.
    assert_eq!(spores(n1).unwrap(), Vec::new(), "n1 lists spores");
    assert_eq!(store_files(n1), Vec::<String>::new(), "n1 kept files");

    // Every refusal is counted once, by reason (token-less ones are not spores).
    let by_reason = refused(&metrics(n1));
    println!("refusals on n1: {by_reason:?}");
    assert_eq!(by_reason.get("untrusted"), Some(&2), "{by_reason:?}");
    let malformed: u64 = by_reason
        .iter()
        .filter(|(r, _)| *r != "untrusted")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(malformed, tampered, "tampered refusals: {by_reason:?}");
    for reason in by_reason.keys() {
        assert!(
            [
                "untrusted",
                "bad_manifest",
                "bad_signature",
                "payload_digest_mismatch",
                "bad_payload",
                "truncated",
            ]
            .contains(&reason.as_str()),
            "unexpected refusal reason {reason:?}: {by_reason:?}"
        );
    }
    assert!(by_reason.contains_key("bad_signature"), "{by_reason:?}");

    // Trusting the other key makes the same push succeed.
    trust_add(n1, &other_key);
    let mut keys = trust_list(n1);
    keys.sort();
    let mut want = vec![good_key.hex.clone(), other_key.hex.clone()];
    want.sort();
    assert_eq!(keys, want, "trust list");
    let r = push_http(n1, &other.bytes, Some(&token));
    assert_eq!(r.status, 201, "push once trusted answered: {}", r.text());
    let digest = serde_json::from_slice::<Value>(&r.body).expect("JSON")["digest"]
        .as_str()
        .expect("a digest")
        .to_string();
    assert_eq!(digest, other.digest);

    // And removing it makes a new push from it untrusted again.
    ok(
        &cli(n1, &["trust", "remove", &other_key.hex]),
        "myco trust remove",
    );
    assert_eq!(trust_list(n1), vec![good_key.hex.clone()]);
    let r = push_http(n1, &other2.bytes, Some(&token));
    assert_eq!(
        r.status,
        403,
        "push after trust remove answered: {}",
        r.text()
    );
    assert_eq!(refused(&metrics(n1)).get("untrusted"), Some(&3));

    // The untampered spore of the trusted key still goes in.
    assert_eq!(push_cli(n1, &good.file), good.digest);

    // Exactly the accepted spores are listed, on both nodes.
    let mut want = vec![good.digest.clone(), other.digest.clone()];
    want.sort();
    for a in [n1, n2] {
        wait_for(
            &format!("{} to list exactly {want:?}", a.name),
            LISTED,
            || {
                let mut got: Vec<String> = spores(a)?.into_iter().map(|e| e.digest).collect();
                got.sort();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        );
    }
}

/// File modes survive pack, push, fetch and extract: executables stay
/// executable (and run), data files stay non-executable. Pack normalizes
/// modes (FORMAT.md): 0755 if any execute bit was set, else 0644.
#[test]
fn executable_bit_survives_pack_and_download() {
    let mut h = Harness::new("spores-modes");
    h.mesh(2);
    let (n1, n2) = (h.agent(0), h.agent(1));
    let publisher = keygen(&h.root, "pub.key");
    let tool: &[u8] = b"#!/bin/sh\necho tool\n";
    let secret: &[u8] = b"not for others\n";
    // (path, content, mode on disk when packed, mode after extraction)
    let files: [(&str, &[u8], u32, u32); 4] = [
        ("run.sh", SCRIPT, 0o755, 0o755),
        ("data/greeting.txt", GREETING, 0o644, 0o644),
        ("bin/tool", tool, 0o700, 0o755),
        ("data/secret.txt", secret, 0o600, 0o644),
    ];
    let extra: Vec<(&str, &[u8], u32)> = files[2..].iter().map(|f| (f.0, f.1, f.2)).collect();
    let dir = workload(&h.root, "modes", &extra);
    let spore = pack(&h.root, &dir, "modes", "1", &publisher);
    trust_add(n1, &publisher);
    let digest = push_cli(n1, &spore.file);
    assert_eq!(digest, spore.digest);
    // A listing can come before its holder does (two records): wait for
    // the holder, without which n2 has nowhere to fetch from.
    let holder = node_id(&h, 0);
    await_listed(n2, &digest, &[&holder], false);
    let (bytes, _) = download(n2, &digest);
    assert_eq!(digest_of(&bytes), digest);
    let file = h.root.join("downloaded.spore");
    fs::write(&file, &bytes).unwrap();

    let dest = h.root.join("extracted");
    let trusted = [myco_spore::read_public_key(&publisher.pubkey).expect("reading the public key")];
    let v = myco_spore::extract(&file, &dest, &trusted, &myco_spore::Limits::default())
        .unwrap_or_else(|e| panic!("extracting the downloaded spore: {e}"));
    assert_eq!(v.digest, digest);
    assert_eq!(v.manifest.command, "./run.sh");

    for (path, content, packed, want) in files {
        let p = dest.join(path);
        let mode = fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{path} was not extracted: {e}"))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            want,
            "{path} has mode {:o}; packed as {packed:o}, it should be {want:o}",
            mode & 0o777
        );
        assert_eq!(fs::read(&p).unwrap(), content, "{path} content");
    }
    for (script, says) in [("run.sh", "hello from a spore\n"), ("bin/tool", "tool\n")] {
        let run = std::process::Command::new(dest.join(script))
            .output()
            .unwrap_or_else(|e| panic!("running the extracted {script}: {e}"));
        assert!(run.status.success(), "{script}: {run:?}");
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            says,
            "{script} output"
        );
    }
}

/// Two nodes hold a spore; the one a third node would ask first is killed
/// and the third node already has part of the file: the download still
/// succeeds, from the survivor, resuming the partial file.
#[test]
fn fetch_resumes_and_survives_a_dead_holder() {
    let t_start = Instant::now();
    let mut h = Harness::new("spores-dead-holder");
    h.mesh(3);
    let ids: Vec<String> = (0..3).map(|i| node_id(&h, i)).collect();
    let publisher = keygen(&h.root, "pub.key");
    let blob = noise(3 * CHUNK, 4);
    let dir = workload(&h.root, "resume", &[("blob.bin", &blob, 0o644)]);
    let spore = pack(&h.root, &dir, "resume", "1", &publisher);
    assert!(spore.bytes.len() > 3 * CHUNK, "the spore spans 4 chunks");
    trust_add(h.agent(0), &publisher);
    let digest = push_cli(h.agent(0), &spore.file);
    assert_eq!(digest, spore.digest);
    await_listed(h.agent(1), &digest, &[&ids[0]], false);
    let (bytes, _) = download(h.agent(1), &digest);
    assert!(bytes == spore.bytes, "n2's download differs");

    // Node 3 knows both holders; it tries them in the order it lists them.
    let (entry, _) = await_listed(h.agent(2), &digest, &[&ids[0], &ids[1]], false);
    let order = holders(&entry);
    let first = if order[0] == ids[0] { 0 } else { 1 };
    let survivor = 1 - first;
    assert_eq!(order, vec![ids[first].clone(), ids[survivor].clone()]);

    // Part of the file is already on node 3, as an interrupted fetch leaves it.
    let hex = digest.strip_prefix("sha256:").unwrap();
    let part = h
        .agent(2)
        .dir
        .join("spores/tmp")
        .join(format!("{hex}.part"));
    assert!(part.parent().unwrap().is_dir(), "no {}", part.display());
    let seeded = 2 * CHUNK + 12_345;
    fs::write(&part, &spore.bytes[..seeded]).unwrap();

    let sent_before = counter(&metrics(h.agent(survivor)), "myco_stream_bytes_sent_total");
    h.kill(first);
    let first_name = h.agent(first).name.clone();
    let (_, detected) = wait_for(
        &format!("n3 to see {first_name} not alive"),
        Duration::from_secs(15),
        || match h.state_of(2, &first_name)? {
            st if st == "alive" => Err(st),
            st => Ok(st),
        },
    );

    let (bytes, took) = download(h.agent(2), &digest);
    assert_eq!(
        digest_of(&bytes),
        digest,
        "n3 served {} bytes that are not the spore",
        bytes.len()
    );
    assert!(bytes == spore.bytes, "n3 served other bytes");
    let sent = counter(&metrics(h.agent(survivor)), "myco_stream_bytes_sent_total") - sent_before;
    let rest = (spore.bytes.len() - seeded) as u64;
    println!(
        "killed the first holder {first_name} ({}); n3 saw it down after {detected:?}; \
         download from the survivor took {took:?}; survivor sent {sent} stream bytes for the \
         {rest} missing of {} (seeded {seeded})",
        ids[first],
        spore.bytes.len()
    );
    assert!(
        sent >= rest,
        "the survivor sent only {sent} bytes, {rest} were missing"
    );
    assert!(
        sent < rest + CHUNK as u64 / 2,
        "the survivor sent {sent} bytes for {rest} missing: the partial file was not resumed"
    );
    assert!(!part.exists(), "the partial file is left behind");
    await_listed(
        h.agent(2),
        &digest,
        &[&ids[survivor], &ids[first], &ids[2]],
        true,
    );
    if took > Duration::from_secs(5) {
        println!(
            "NOTE: the fetch waited {took:?} on {first_name}, which membership already \
             reported down, before asking the next holder"
        );
    }
    assert!(
        t_start.elapsed() < Duration::from_secs(40),
        "the test took {:?}",
        t_start.elapsed()
    );
}

/// An 8 MiB incompressible spore pushed to node 1 and downloaded from node 3
/// arrives intact; prints how long it took.
#[test]
fn large_spore_crosses_the_mesh_intact() {
    let mut h = Harness::new("spores-large");
    h.mesh(3);
    let id1 = node_id(&h, 0);
    let publisher = keygen(&h.root, "pub.key");
    let blob = noise(8 * CHUNK, 8);
    let dir = workload(&h.root, "large", &[("blob.bin", &blob, 0o644)]);
    let t_pack = Instant::now();
    let spore = pack(&h.root, &dir, "large", "1", &publisher);
    let packed = t_pack.elapsed();
    assert!(
        spore.bytes.len() > 8 * CHUNK,
        "random data does not compress"
    );
    trust_add(h.agent(0), &publisher);

    let t0 = Instant::now();
    let digest = push_cli(h.agent(0), &spore.file);
    let pushed = t0.elapsed();
    assert_eq!(digest, spore.digest);
    let (_, listed3) = await_listed(h.agent(2), &digest, &[&id1], false);
    let (bytes, fetched) = download(h.agent(2), &digest);
    let total = t0.elapsed();
    assert_eq!(
        digest_of(&bytes),
        digest,
        "n3 served {} bytes that are not the spore",
        bytes.len()
    );
    assert!(bytes == spore.bytes, "n3 served other bytes");

    let file = h.root.join("downloaded.spore");
    fs::write(&file, &bytes).unwrap();
    let dest = h.root.join("extracted");
    let trusted = [myco_spore::read_public_key(&publisher.pubkey).unwrap()];
    myco_spore::extract(&file, &dest, &trusted, &myco_spore::Limits::default())
        .unwrap_or_else(|e| panic!("extracting the downloaded spore: {e}"));
    assert!(
        fs::read(dest.join("blob.bin")).unwrap() == blob,
        "blob.bin differs"
    );
    let mib = spore.bytes.len() as f64 / (1024.0 * 1024.0);
    println!(
        "{:.1} MiB spore: pack {packed:?}, push {pushed:?}, listed on n3 after +{listed3:?}, \
         n3 download (fetch from n1) {fetched:?} ({:.1} MiB/s), push to bytes on n3 {total:?}",
        mib,
        mib / fetched.as_secs_f64()
    );
}

/// Garbage collection: with a zero retention period, a spore no job
/// references is deleted by `POST /v1/spores/gc` and its holder entry goes
/// from the index; the GC needs the token.
#[test]
fn unreferenced_spores_are_collected_after_retention() {
    let mut h = Harness::new("spores-gc");
    let config = h.root.join("gc.toml");
    fs::write(&config, "[spores]\nretention_hours = 0\n").unwrap();
    let n1 = h.start(
        "n1",
        Opts {
            join: vec![],
            key_file: None,
            args: vec!["--config".into(), s(&config).into()],
            ..Opts::default()
        },
    );
    let a = h.agent(n1);
    let publisher = keygen(&h.root, "pub.key");
    let dir = workload(&h.root, "gc", &[]);
    let spore = pack(&h.root, &dir, "gc", "1", &publisher);
    trust_add(a, &publisher);
    let digest = push_cli(a, &spore.file);
    let file_name = format!("{}.spore", digest.trim_start_matches("sha256:"));
    assert!(
        store_files(a).iter().any(|f| f.ends_with(&file_name)),
        "{:?}",
        store_files(a)
    );

    let denied = a.anon().spores_gc();
    assert_eq!(
        denied.as_ref().err().and_then(|e| e.status()),
        Some(401),
        "gc without a token: {denied:?}"
    );
    let r = a.client().spores_gc().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.removed, 1, "{r:?}");
    assert!(
        store_files(a).iter().all(|f| !f.ends_with(".spore")),
        "file left: {:?}",
        store_files(a)
    );
    let entry = listed(a, &digest).expect("the index still names the spore");
    assert!(
        holders(&entry).is_empty(),
        "this node is no longer a holder: {entry:?}"
    );
    let again = a.client().spores_gc().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.removed, 0, "nothing left to collect");
}
