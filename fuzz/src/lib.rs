//! Fuzz targets for every decoder that takes bytes from outside a node.
//!
//! Each target is a plain function over `&[u8]` that must never panic,
//! hang or allocate by a length it read: AFL++ drives them through the
//! binaries in `fuzz_targets/` (see `scripts/fuzz`), and `cargo test` here
//! replays the committed seed corpora and every regression input through
//! the same functions, so a crash once found stays fixed without the fuzzer.
//!
//! Where a decoder succeeds, the target also checks that the value encodes
//! back to something that decodes to the same value: a decoder that accepts
//! what the encoder can never reproduce is a bug even without a panic.
//!
//! Authenticated inputs (sealed datagrams, signed spores) are sealed or
//! signed by the harness with fixed keys ([`cluster_ring`],
//! [`publisher_key`]): a fuzzer cannot forge a tag, and everything behind
//! the check is what a member (or a trusted publisher) can send.

mod api;
mod cache;
mod job;
mod node;
mod proto;
pub mod seeds;
mod spore;

pub use api::api_json;
pub use cache::{cache_message, msg_message, resp_request};
pub use job::{job_record, job_spec};
pub use node::{NodeStep, node_inputs, node_members_after};
pub use proto::{blob_message, envelope_open, frame_decode, gc_record, stream_frame};
pub use spore::{publisher_key, signed_spore, spore_inspect, spore_limits, spore_payload};

use myco_proto::store_record::{DiskRecord, decode_key, encode_key};
use myco_proto::{ClusterKey, KeyRing};

/// The names of every target, as `fuzz_targets/` and `corpus/` name them.
pub const TARGETS: &[&str] = &[
    "envelope_open",
    "frame_decode",
    "node_inputs",
    "stream_frame",
    "blob_message",
    "gc_record",
    "spore_inspect",
    "spore_payload",
    "store_record",
    "api_json",
    "job_spec",
    "job_record",
    "cache_message",
    "msg_message",
    "resp_request",
];

/// Runs target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    let f: fn(&[u8]) = match name {
        "envelope_open" => envelope_open,
        "frame_decode" => frame_decode,
        "node_inputs" => node_inputs,
        "stream_frame" => stream_frame,
        "blob_message" => blob_message,
        "gc_record" => gc_record,
        "spore_inspect" => spore_inspect,
        "spore_payload" => spore_payload,
        "store_record" => store_record,
        "api_json" => api_json,
        "job_spec" => job_spec,
        "job_record" => job_record,
        "cache_message" => cache_message,
        "msg_message" => msg_message,
        "resp_request" => resp_request,
        _ => return false,
    };
    f(data);
    true
}

/// The cluster key every harness seals and opens with.
pub fn cluster_ring() -> KeyRing {
    KeyRing::new(ClusterKey::from_bytes([7; 32]))
}

/// A record or key of the agent's store file (a file on disk may be
/// damaged). The first byte picks the decoder: even for a record, odd for
/// a key; the rest is the input.
pub fn store_record(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        // One encoding per record: what decodes must encode back the same.
        if let Ok(r) = DiskRecord::decode(bytes) {
            assert_eq!(r.encode(), bytes, "a stored record re-encodes differently");
        }
    } else if let Ok((table, key)) = decode_key(bytes) {
        assert_eq!(
            encode_key(table, &key),
            bytes,
            "a stored key re-encodes differently"
        );
    }
}
