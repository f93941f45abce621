//! Seed corpora: valid encodings of every input kind, made with the real
//! encoders, so the fuzzer starts from inputs that reach deep code.
//! `cargo run --bin seeds` writes them under `corpus/<target>/`.

use std::collections::BTreeMap;
use std::io::Write;

use myco_core::{Node, Time};
use myco_proto::blob::BlobMessage;
use myco_proto::frame::Peer;
use myco_proto::horizon::{GC_RECORD_VERSION, GcRecord, Horizon};
use myco_proto::instance::{Exit, InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, JobSpec};
use myco_proto::sync::{STREAM_VERSION, StreamFrame, SyncMessage, Version};
use myco_proto::{Capacity, Change, Envelope, Frame, NodeId, NodeManifest, Table, Timestamp};

use crate::cluster_ring;
use crate::node::{NodeStep, SENDER, TARGET, addr_of, test_node};
use crate::spore::signed_spore;

/// Every seed: (target, file name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_owned(), bytes));
    };
    let trace = exchange();
    let ring = cluster_ring();
    let sender = NodeId::from_u64(SENDER);
    for (i, frame) in frames(&trace).into_iter().enumerate() {
        let kind = Frame::decode(&frame).map_or("raw", |f| f.kind());
        add("frame_decode", &format!("{i:02}-{kind}"), frame.clone());
        let sealed = Envelope::seal(&ring, sender, 1, i as u64 + 1, &frame);
        add("envelope_open", &format!("{i:02}-{kind}"), sealed);
    }
    add("envelope_open", "not-sealed", b"MY\x01garbage".to_vec());
    let mut whole = Vec::new();
    for step in &trace {
        step.encode_into(&mut whole);
    }
    add("node_inputs", "exchange", whole);
    for (i, m) in stream_frames(&trace).into_iter().enumerate() {
        add("stream_frame", &format!("{i:02}"), m.clone());
        let mut one = Vec::new();
        NodeStep::Message(m).encode_into(&mut one);
        add("node_inputs", &format!("message-{i:02}"), one);
    }
    for (i, m) in blobs().into_iter().enumerate() {
        add("blob_message", &format!("{i:02}"), m);
    }
    for (target, name, bytes) in crate::cache::seeds() {
        add(target, &name, bytes);
    }
    add("gc_record", "reaped", gc(true));
    add("gc_record", "live", gc(false));
    for (name, payload) in payloads() {
        add("spore_payload", name, payload.clone());
        add("spore_inspect", name, signed_spore(&payload));
    }
    for (name, bytes) in store_records() {
        add("store_record", name, bytes);
    }
    for (name, bytes) in api_bodies() {
        add("api_json", name, bytes);
    }
    for (name, bytes) in jobs() {
        add(
            if name.starts_with("spec") {
                "job_spec"
            } else {
                "job_record"
            },
            name,
            bytes,
        );
    }
    out
}

/// Two real nodes: node 2 joins node 1, both write, and every datagram and
/// stream message node 2 sends node 1 is recorded (opened) with the time
/// between them: node 1's view of a real exchange.
fn exchange() -> Vec<NodeStep> {
    let ring = cluster_ring();
    let mut target = test_node(TARGET, ring.clone());
    let mut sender = test_node(SENDER, ring.clone());
    sender.join(Time::ZERO, addr_of(TARGET));
    let mut steps = Vec::new();
    let mut idle: u16 = 0;
    for tick in 0..400u64 {
        let now = Time(tick * 10);
        if tick == 100 {
            write(&mut sender, now, "app/a", Some(b"1".to_vec()));
            write(&mut target, now, "app/b", Some(b"2".to_vec()));
        }
        if tick == 200 {
            write(&mut sender, now, "app/a", None);
        }
        target.handle_timeout(now);
        sender.handle_timeout(now);
        let before = steps.len();
        deliver(&mut sender, &mut target, now, &mut steps);
        if steps.len() > before && idle > 0 {
            steps.insert(before, NodeStep::Advance(idle));
            idle = 0;
        }
        idle = idle.saturating_add(10);
    }
    steps.truncate(250);
    steps
}

fn write(node: &mut Node, now: Time, key: &str, value: Option<Vec<u8>>) {
    let change = node.write(now, Table::KV, key, value).expect("small write");
    node.durable(now, &[change.ts]);
}

/// Delivers both ways until quiet, recording what `sender` sends.
fn deliver(sender: &mut Node, target: &mut Node, now: Time, steps: &mut Vec<NodeStep>) {
    let ring = cluster_ring();
    loop {
        let mut moved = false;
        while let Some(t) = sender.poll_transmit() {
            moved = true;
            let (_, plain) = Envelope::open(&ring, &t.payload).expect("own datagram");
            steps.push(NodeStep::Datagram(plain));
            target.handle_datagram(now, addr_of(SENDER), &t.payload);
        }
        while let Some(m) = sender.poll_message() {
            moved = true;
            steps.push(NodeStep::Message(m.payload.clone()));
            target.handle_message(now, &m.payload);
        }
        while let Some(t) = target.poll_transmit() {
            moved = true;
            sender.handle_datagram(now, addr_of(TARGET), &t.payload);
        }
        while let Some(m) = target.poll_message() {
            moved = true;
            sender.handle_message(now, &m.payload);
        }
        settle(sender, now);
        settle(target, now);
        if !moved {
            break;
        }
    }
}

/// What the node harness does after each step, less the sending: events, durability, collection.
fn settle(node: &mut Node, now: Time) {
    while node.poll_event().is_some() {}
    let persisted: Vec<_> = node.poll_persist().iter().map(|c| c.ts).collect();
    if !persisted.is_empty() {
        node.durable(now, &persisted);
    }
    let _ = node.poll_collected();
    let _ = node.poll_dropped();
}

/// One frame of each kind seen in the exchange, and the kinds it lacks.
fn frames(trace: &[NodeStep]) -> Vec<Vec<u8>> {
    let mut by_kind = BTreeMap::new();
    for step in trace {
        if let NodeStep::Datagram(f) = step {
            let kind = Frame::decode(f).map_or("raw", |f| f.kind());
            by_kind.entry(kind).or_insert_with(|| f.clone());
        }
    }
    let peer = Peer {
        id: NodeId::from_u64(SENDER),
        addr: addr_of(SENDER),
        boot: 1,
        bump: 0,
    };
    let mut out: Vec<_> = by_kind.into_values().collect();
    out.push(Frame::Leave(peer).encode());
    out.push(Frame::ManifestRequest.encode());
    out.push(Frame::Manifest(manifest()).encode());
    out
}

fn manifest() -> NodeManifest {
    NodeManifest {
        format: NodeManifest::FORMAT,
        id: NodeId::from_u64(SENDER),
        boot: 1,
        name: "n2".into(),
        tags: BTreeMap::from([("zone".into(), "a".into()), ("disk".into(), "ssd".into())]),
        capacity: Capacity {
            cpu_milli: 4000,
            memory_mb: 8192,
        },
        mesh_addr: addr_of(SENDER),
        api_addr: Some("10.0.0.2:7070".into()),
        edge_addr: Some("[::1]:8080".into()),
        version: "0.1.0".into(),
        key_id: "01020304".into(),
        speaks: myco_proto::compat::THIS_BUILD,
    }
}

/// Stream messages from the exchange, and one of each message kind.
fn stream_frames(trace: &[NodeStep]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = trace
        .iter()
        .filter_map(|s| match s {
            NodeStep::Message(m) => Some(m.clone()),
            _ => None,
        })
        .take(4)
        .collect();
    let change = |key: &str, value: Option<&[u8]>| Change {
        table: Table::KV,
        key: key.into(),
        ts: Timestamp {
            wall_ms: 1_700_000_000_000,
            logical: 2,
            node: NodeId::from_u64(SENDER),
        },
        value: value.map(<[u8]>::to_vec),
    };
    let messages = [
        SyncMessage::Push(vec![change("a/b", Some(b"v")), change("a/c", None)]),
        SyncMessage::Summary(0x0123_4567_89ab_cdef),
        SyncMessage::Digest((0..8).collect()),
        SyncMessage::Versions {
            buckets: vec![3, 255],
            versions: vec![Version {
                table: Table::KV,
                key: "x".into(),
                ts: change("x", None).ts,
                hash: 0xfeed,
            }],
        },
        SyncMessage::Want(vec![(Table::KV, "x".into()), (Table::KV, "a/b".into())]),
        SyncMessage::InSync,
    ];
    for message in messages {
        let frame = StreamFrame {
            version: STREAM_VERSION,
            from: NodeId::from_u64(SENDER),
            horizon: Horizon { at: 5, digest: 9 },
            message,
        };
        out.push(frame.encode());
    }
    out
}

fn blobs() -> Vec<Vec<u8>> {
    let digest = format!("sha256:{}", "ab".repeat(32));
    vec![
        BlobMessage::Request {
            digest: digest.clone(),
            offset: 0,
            len: myco_proto::blob::CHUNK,
            reply_to: addr_of(SENDER),
        }
        .encode(),
        BlobMessage::Data {
            digest: digest.clone(),
            offset: 4,
            total: 12,
            data: b"8 bytes!".to_vec(),
        }
        .encode(),
        BlobMessage::Busy {
            digest: digest.clone(),
            offset: 0,
        }
        .encode(),
        BlobMessage::Missing { digest }.encode(),
    ]
}

fn gc(reaped: bool) -> Vec<u8> {
    GcRecord {
        version: GC_RECORD_VERSION,
        reported: Horizon { at: 10, digest: 3 },
        applied: Horizon { at: 5, digest: 2 },
        reaped,
    }
    .encode()
}

/// zstd-compressed tar payloads: the shapes `myco spore pack` writes and
/// the shapes the walk must refuse.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("in memory");
    };
    let special = |b: &mut tar::Builder<Vec<u8>>, path: &str, ty: tar::EntryType, link: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_entry_type(ty);
        if link.is_empty() {
            b.append_data(&mut h, path, &[][..]).expect("in memory");
        } else {
            b.append_link(&mut h, path, link).expect("in memory");
        }
    };
    let mut shapes: Vec<(&'static str, tar::Builder<Vec<u8>>)> = Vec::new();

    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "bin/app", b"#!/bin/sh\necho hi\n", 0o755);
    shapes.push(("one-file", b));

    let mut b = tar::Builder::new(Vec::new());
    special(&mut b, "./", tar::EntryType::Directory, "");
    special(&mut b, "bin", tar::EntryType::Directory, "");
    file(&mut b, "bin/real", b"\x7fELF", 0o755);
    special(&mut b, "bin/app", tar::EntryType::Symlink, "real");
    special(&mut b, "bin/hard", tar::EntryType::Link, "bin/real");
    file(
        &mut b,
        &format!("data/{}", "long".repeat(40)),
        b"long name",
        0o644,
    );
    shapes.push(("tree-links-longname", b));

    let mut b = tar::Builder::new(Vec::new());
    special(
        &mut b,
        "bin/app",
        tar::EntryType::Symlink,
        "../../etc/passwd",
    );
    shapes.push(("escaping-symlink", b));

    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"bin/app"[..]), ("mtime", b"1")])
        .expect("in memory");
    file(&mut b, "x", b"pax named", 0o755);
    shapes.push(("pax", b));

    shapes.push(("empty", tar::Builder::new(Vec::new())));

    shapes
        .into_iter()
        .map(|(name, b)| {
            let tar = b.into_inner().expect("in memory");
            let mut z = zstd::stream::Encoder::new(Vec::new(), 3).expect("zstd");
            z.write_all(&tar).expect("in memory");
            (name, z.finish().expect("zstd"))
        })
        .collect()
}

fn store_records() -> Vec<(&'static str, Vec<u8>)> {
    // The store's format (see myco-proto's store_record.rs): version 1, wall
    // ms and logical counter little-endian, node id, kind, value.
    let record = |kind: u8, value: &[u8]| {
        let mut r = vec![0u8, 1];
        r.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        r.extend_from_slice(&3u32.to_le_bytes());
        r.extend_from_slice(&NodeId::from_u64(SENDER).0);
        r.push(kind);
        r.extend_from_slice(value);
        r
    };
    vec![
        ("value", record(1, b"hello")),
        ("tombstone", record(0, b"")),
        ("key", [&[1u8, 1][..], b"app/config"].concat()),
    ]
}

fn api_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let node = r#"{"id":"0000000000000002","name":"n2","addr":"10.0.0.2:7946","state":"alive","tags":{"zone":"a"},"capacity":{"cpu_milli":1000,"memory_mb":512},"allocated":{"cpu_milli":0,"memory_mb":0},"api":"10.0.0.2:7070","edge":null,"version":"0.1.0","is_self":false,"state_age_ms":12}"#;
    let bodies: [(&'static str, u8, String); 12] = [
        ("peer-add", 0, r#"{"addr":"10.0.0.3:7946"}"#.into()),
        ("trust", 1, r#"{"key":"00ff","comment":"ci"}"#.into()),
        ("spore-record", 2, r#"{"name":"web","version":"1.2","size":10,"publisher":"ab","created_at":5}"#.into()),
        ("node", 3, node.into()),
        ("nodes", 4, format!("[{node},{node}]")),
        ("status", 5, format!(r#"{{"node":{node},"cluster":{{"alive":1,"suspect":0,"down":0,"left":0}},"cluster_key_id":"01020304","uptime_s":3,"version":"0.1.0"}}"#)),
        ("kv-entry", 6, r#"{"key":"a","value":null,"value_base64":"AAE=","version":"1-0-02"}"#.into()),
        ("kv-list", 7, r#"[{"key":"a","value":"x","version":"1-0-02"}]"#.into()),
        ("kv-written", 8, r#"{"key":"a","version":"1-0-02","deleted":true}"#.into()),
        ("event", 9, r#"{"type":"state","table":"kv","key":"a","version":"1-0-02","deleted":false}"#.into()),
        ("spore-info", 10, r#"{"digest":"sha256:00","name":"web","version":"1","size":1,"publisher":"ab","holders":["02"],"local":true}"#.into()),
        ("faults", 11, r#"{"block":["10.0.0.3:7946","[::1]:1"]}"#.into()),
    ];
    bodies
        .into_iter()
        .map(|(name, which, body)| (name, [&[which][..], body.as_bytes()].concat()))
        .collect()
}

/// Job files and records: the first byte picks the decoder (even: TOML
/// or job record; odd: JSON or instance record).
fn jobs() -> Vec<(&'static str, Vec<u8>)> {
    const FULL: &str = r#"
name = "hello"
spore = "hello@1.2.0"
count = 3
strategy = "pack"
duplicates = "never"
kill_timeout_ms = 2000
[env]
GREETING = "hi"
[resources]
cpu_milli = 250
memory_mb = 128
pids = 64
[constraints]
zone = ["a", "b"]
arch = "!arm"
disk = { not_in = ["hdd"] }
[health]
http = "/health"
interval_ms = 500
[update]
max_parallel = 2
auto_revert = false
[restart]
attempts = 5
delay_ms = 100
[[volumes]]
name = "data"
path = "var/data"
"#;
    let spec = JobSpec::from_toml(FULL).expect("the documented example parses");
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let mut pinned = spec.clone();
    pinned.spore = digest.clone();
    let record = JobRecord {
        format: myco_proto::job::JOB_RECORD_FORMAT,
        version: 2,
        spec: pinned,
        spore_ref: "hello@1.2.0".into(),
        stopped: false,
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_100_000,
    };
    let instance = InstanceRecord {
        format: myco_proto::instance::INSTANCE_RECORD_FORMAT,
        id: InstanceRecord::id_for("hello", 1, 2, NodeId::from_u64(SENDER)),
        job: "hello".into(),
        slot: 1,
        version: 2,
        node: NodeId::from_u64(SENDER),
        state: InstanceState::Launching,
        addr: Some(addr_of(SENDER)),
        digest,
        restarts: 1,
        last_exit: Some(Exit::Signal(9)),
        reason: "probe failed".into(),
        avoid_until_ms: Some(5),
        since_ms: 7,
    };
    // A job with edge settings is written as record format 3.
    let mut edged = record.clone();
    edged.spec.edge.balance = myco_proto::job::Balance::RoundRobin;
    let with = |which: u8, bytes: &[u8]| [&[which][..], bytes].concat();
    vec![
        ("spec-toml-full", with(0, FULL.as_bytes())),
        (
            "spec-toml-minimal",
            with(0, b"name = \"web\"\nspore = \"web@1\"\n"),
        ),
        ("spec-json", with(1, spec.to_json().as_bytes())),
        ("record-job", with(0, &record.encode())),
        ("record-job-edge", with(0, &edged.encode())),
        ("record-instance", with(1, &instance.encode())),
    ]
}
