//! The encoded bytes of this release's messages and records, kept as
//! fixtures (`tests/fixtures/r1/*.hex`), so a later release is tested
//! against exactly what this one sends and stores (ARCHITECTURE.md,
//! "Upgrades").
//!
//! Each fixture must decode, with today's decoders, to the sample built
//! below, and re-encode to the same bytes. A release that changes a
//! format keeps decoding the old fixtures (through the old version's
//! decoder) and adds a new directory for its own. `MYCO_BLESS=1` writes
//! the current encodings, for a new release's directory only: never
//! rewrite a released one to make a test pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use myco_proto::blob::BlobMessage;
use myco_proto::cache::{CacheEntry, CacheMessage};
use myco_proto::compat::R1;
use myco_proto::frame::{Peer, Summary};
use myco_proto::horizon::{GC_RECORD_VERSION, GcRecord, Horizon};
use myco_proto::instance::{Exit, INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};
use myco_proto::job::{JOB_RECORD_FORMAT, JobRecord, JobSpec};
use myco_proto::logs::LogMessage;
use myco_proto::msg::MsgMessage;
use myco_proto::sync::{STREAM_VERSION, StreamFrame, SyncMessage, Version};
use myco_proto::{
    Capacity, Change, ClusterKey, Envelope, Frame, KeyRing, NodeId, NodeManifest, Table, Timestamp,
};

/// The release these fixtures belong to.
const RELEASE: &str = "r1";

fn addr() -> SocketAddr {
    "127.0.0.1:7946".parse().unwrap()
}

fn ts() -> Timestamp {
    Timestamp {
        wall_ms: 1_764_000_000_000,
        logical: 2,
        node: NodeId::from_u64(7),
    }
}

fn peer() -> Peer {
    Peer {
        id: NodeId::from_u64(7),
        addr: addr(),
        boot: 1_764_000_000_000,
        bump: 1,
    }
}

fn manifest() -> NodeManifest {
    NodeManifest {
        format: NodeManifest::FORMAT,
        id: NodeId::from_u64(7),
        boot: 1_764_000_000_000,
        name: "pi-1".into(),
        tags: BTreeMap::from([("zone".into(), "shelf".into())]),
        capacity: Capacity {
            cpu_milli: 4000,
            memory_mb: 8192,
        },
        mesh_addr: addr(),
        api_addr: Some("127.0.0.1:7070".into()),
        edge_addr: Some("0.0.0.0:8080".into()),
        version: "0.1.0".into(),
        key_id: "01020304".into(),
        speaks: R1,
    }
}

fn frames() -> Vec<(&'static str, Frame)> {
    vec![
        ("frame_swim", Frame::Swim(vec![1, 2, 3, 255])),
        ("frame_hello", Frame::Hello(peer())),
        ("frame_hello_ack", Frame::HelloAck(peer())),
        ("frame_manifest_request", Frame::ManifestRequest),
        ("frame_manifest", Frame::Manifest(manifest())),
        ("frame_leave", Frame::Leave(peer())),
        (
            "frame_summary",
            Frame::Summary(Summary {
                from: NodeId::from_u64(1),
                to: Some(NodeId::from_u64(9)),
                push: true,
                members: vec![peer()],
            }),
        ),
    ]
}

fn sync_messages() -> Vec<(&'static str, SyncMessage)> {
    let change = Change {
        table: Table::KV,
        key: "app/colour".into(),
        ts: ts(),
        value: Some(b"blue".to_vec()),
    };
    vec![
        ("sync_push", SyncMessage::Push(vec![change])),
        ("sync_summary", SyncMessage::Summary(0xdead_beef)),
        ("sync_digest", SyncMessage::Digest(vec![1, 2, 3])),
        (
            "sync_versions",
            SyncMessage::Versions {
                buckets: vec![4],
                versions: vec![Version {
                    table: Table::JOBS,
                    key: "hello".into(),
                    ts: ts(),
                    hash: 42,
                }],
            },
        ),
        (
            "sync_want",
            SyncMessage::Want(vec![(Table::KV, "a".into())]),
        ),
        ("sync_in_sync", SyncMessage::InSync),
    ]
}

fn job_record() -> JobRecord {
    let spec = JobSpec::from_toml(
        r#"
name = "hello"
spore = "hello@1.0.0"
count = 3
[env]
GREETING = "hi"
"#,
    )
    .expect("the sample job parses");
    JobRecord {
        format: JOB_RECORD_FORMAT,
        version: 2,
        spec,
        spore_ref: "hello@1.0.0".into(),
        stopped: false,
        created_ms: 1_764_000_000_000,
        updated_ms: 1_764_000_001_000,
    }
}

fn instance_record() -> InstanceRecord {
    InstanceRecord {
        format: INSTANCE_RECORD_FORMAT,
        id: "hello-0-v2-0000000000000007".into(),
        job: "hello".into(),
        slot: 0,
        version: 2,
        node: NodeId::from_u64(7),
        state: InstanceState::Ready,
        addr: Some("127.0.0.1:20001".parse().unwrap()),
        digest: "ab".repeat(32),
        restarts: 1,
        last_exit: Some(Exit::Code(1)),
        reason: "ready".into(),
        avoid_until_ms: None,
        since_ms: 1_764_000_002_000,
    }
}

/// Every fixture: its name, today's encoding, and a check that decodes
/// bytes with today's decoder and compares them with the sample.
type Check = Box<dyn Fn(&[u8]) -> Result<(), String>>;

fn fixtures() -> Vec<(String, Vec<u8>, Check)> {
    let mut all: Vec<(String, Vec<u8>, Check)> = Vec::new();
    for (name, frame) in frames() {
        let bytes = frame.encode();
        let check: Check = Box::new(move |b| same(Frame::decode(b).map_err(err)?, &frame));
        all.push((name.into(), bytes, check));
    }
    // One sealed datagram: the header layout and the AEAD are part of the
    // format. Sealing is deterministic (the nonce is sender, epoch, counter).
    let ring = KeyRing::new(ClusterKey::from_bytes([5; 32]));
    let hello = Frame::Hello(peer()).encode();
    let sealed = Envelope::seal(&ring, NodeId::from_u64(7), 9, 11, &hello);
    all.push((
        "envelope_hello".into(),
        sealed,
        Box::new(move |b| {
            let (header, plain) = Envelope::open(&ring, b).map_err(err)?;
            if (header.sender, header.epoch, header.counter) != (NodeId::from_u64(7), 9, 11) {
                return Err(format!("header {header:?}"));
            }
            same(plain, &hello)
        }),
    ));
    for (name, message) in sync_messages() {
        let frame = StreamFrame {
            version: STREAM_VERSION,
            from: NodeId::from_u64(7),
            horizon: Horizon {
                at: 1_764_000_000_000,
                digest: 3,
            },
            message,
        };
        let bytes = frame.encode();
        let check: Check = Box::new(move |b| same(StreamFrame::decode(b).map_err(err)?, &frame));
        all.push((name.into(), bytes, check));
    }
    let blobs = [
        (
            "blob_request",
            BlobMessage::Request {
                digest: "ab".repeat(32),
                offset: 1 << 20,
                len: 1 << 20,
                reply_to: addr(),
            },
        ),
        (
            "blob_data",
            BlobMessage::Data {
                digest: "ab".repeat(32),
                offset: 0,
                total: 4,
                data: vec![0, 1, 2, 3],
            },
        ),
        (
            "blob_missing",
            BlobMessage::Missing {
                digest: "ab".repeat(32),
            },
        ),
    ];
    for (name, message) in blobs {
        let bytes = message.encode();
        let check: Check =
            Box::new(move |b| same(BlobMessage::decode(b).ok_or("undecodable")?, &message));
        all.push((name.into(), bytes, check));
    }
    let log = LogMessage::Chunk {
        request: 5,
        seq: 1,
        text: "hello\n".into(),
    };
    all.push((
        "logs_chunk".into(),
        log.encode(),
        Box::new(move |b| same(LogMessage::decode(b).ok_or("undecodable")?, &log)),
    ));
    let cache = CacheMessage::Put {
        request: 5,
        bucket: "sessions".into(),
        key: "u1".into(),
        entry: CacheEntry {
            ts: ts(),
            value: Some(b"v".to_vec()),
            expires_at_ms: Some(1_764_000_060_000),
        },
        ack: true,
        reply_to: addr(),
    };
    all.push((
        "cache_put".into(),
        cache.encode(),
        Box::new(move |b| same(CacheMessage::decode(b).ok_or("undecodable")?, &cache)),
    ));
    let msg = MsgMessage::Topics {
        from: addr(),
        topics: vec!["orders".into()],
    };
    all.push((
        "msg_topics".into(),
        msg.encode(),
        Box::new(move |b| same(MsgMessage::decode(b).ok_or("undecodable")?, &msg)),
    ));
    let job = job_record();
    all.push((
        "record_job".into(),
        job.encode(),
        Box::new(move |b| same(JobRecord::decode(b).map_err(err)?, &job)),
    ));
    let instance = instance_record();
    all.push((
        "record_instance".into(),
        instance.encode(),
        Box::new(move |b| same(InstanceRecord::decode(b).map_err(err)?, &instance)),
    ));
    let gc = GcRecord {
        version: GC_RECORD_VERSION,
        reported: Horizon { at: 10, digest: 1 },
        applied: Horizon { at: 9, digest: 2 },
        reaped: false,
    };
    all.push((
        "record_gc".into(),
        gc.encode(),
        Box::new(move |b| same(GcRecord::decode(b).map_err(err)?, &gc)),
    ));
    all
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn same<T: PartialEq + std::fmt::Debug>(got: T, want: &T) -> Result<(), String> {
    if &got == want {
        Ok(())
    } else {
        Err(format!("decoded {got:?}, expected {want:?}"))
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(RELEASE)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for line in bytes.chunks(32) {
        for b in line {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    out
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn this_releases_fixtures_decode_to_their_samples_and_encode_the_same() {
    let bless = std::env::var_os("MYCO_BLESS").is_some();
    let mut failures = Vec::new();
    for (name, now, check) in fixtures() {
        let path = dir().join(format!("{name}.hex"));
        if bless {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&path, hex(&now)).unwrap();
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            failures.push(format!("{name}: no fixture at {}", path.display()));
            continue;
        };
        let kept = unhex(&text);
        if let Err(why) = check(&kept) {
            failures.push(format!("{name}: the kept bytes no longer decode: {why}"));
        }
        if kept != now {
            failures.push(format!(
                "{name}: this build encodes it differently from release {RELEASE}; a changed format needs a new version and a new fixture directory (see ARCHITECTURE.md, Upgrades)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Which sample slot a frame fills: an exhaustive match, so a new frame
/// kind does not compile here until it has a fixture.
fn frame_slot(f: &Frame) -> usize {
    match f {
        Frame::Swim(_) => 0,
        Frame::Hello(_) => 1,
        Frame::HelloAck(_) => 2,
        Frame::ManifestRequest => 3,
        Frame::Manifest(_) => 4,
        Frame::Leave(_) => 5,
        Frame::Summary(_) => 6,
    }
}

/// As [`frame_slot`], for sync messages.
fn sync_slot(m: &SyncMessage) -> usize {
    match m {
        SyncMessage::Push(_) => 0,
        SyncMessage::Summary(_) => 1,
        SyncMessage::Digest(_) => 2,
        SyncMessage::Versions { .. } => 3,
        SyncMessage::Want(_) => 4,
        SyncMessage::InSync => 5,
    }
}

#[test]
fn the_fixture_set_covers_every_frame_and_sync_message_kind() {
    let frames: std::collections::BTreeSet<_> =
        frames().iter().map(|(_, f)| frame_slot(f)).collect();
    assert_eq!(frames, (0..7).collect(), "every frame kind has a fixture");
    let syncs: std::collections::BTreeSet<_> =
        sync_messages().iter().map(|(_, m)| sync_slot(m)).collect();
    assert_eq!(syncs, (0..6).collect(), "every sync message has a fixture");
}
