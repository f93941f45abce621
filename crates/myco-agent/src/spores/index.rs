//! The spore index and trusted publishers, as replicated state.
//!
//! Table `spores`: `sha256:<hex>` maps to the manifest summary
//! ([`SporeRecord`]), `sha256:<hex>/holder/<node id>` to the mesh address of
//! a node that holds the file (one key per holder, so holders never
//! overwrite each other), and `name/<name>@<version>` to the digest. Table
//! `trust`: one key per trusted publisher key (hex), the value a comment.
//! Reads come from the mesh's read view and never wait for the loop.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use myco_proto::Table;
use myco_proto::api::SporeRecord;

use crate::mesh::MeshHandle;

/// Most index or trust entries one read takes.
pub const MAX_LIST: usize = 100_000;

/// The index key of a spore's summary is its digest; this is a holder's.
pub fn holder_key(digest: &str, node: &impl std::fmt::Display) -> String {
    format!("{digest}/holder/{node}")
}

/// The index key saying a node is fetching a spore (and serves the part it
/// has): removed when the fetch ends.
pub fn partial_key(digest: &str, node: &impl std::fmt::Display) -> String {
    format!("{digest}/partial/{node}")
}

/// The index key naming a version.
pub fn name_key(name_at_version: &str) -> String {
    format!("name/{name_at_version}")
}

/// Parses a publisher key given as 64 hex digits.
///
/// Weak keys (small-order points, which any signature could verify
/// against) are refused, through the spore format's own check.
pub fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    myco_spore::parse_public_key(hex_key)
}

/// The trusted publisher keys.
pub fn trusted(mesh: &MeshHandle) -> Vec<VerifyingKey> {
    mesh.scan(Table::TRUST, "", MAX_LIST)
        .into_iter()
        .filter_map(|(k, _)| parse_key(&k))
        .collect()
}

/// The digest a `NAME@VERSION` names, if indexed.
pub fn digest_of(mesh: &MeshHandle, name_at_version: &str) -> Option<String> {
    let entry = mesh.get(Table::SPORES, &name_key(name_at_version))?;
    Some(String::from_utf8_lossy(&entry.value.unwrap_or_default()).into_owned())
}

/// Every indexed spore with its holders.
#[derive(Debug, Default)]
pub struct Index {
    /// Summaries by digest.
    pub records: BTreeMap<String, SporeRecord>,
    /// Holders by digest: (node id, mesh address).
    pub holders: BTreeMap<String, Vec<(String, String)>>,
    /// Nodes fetching a spore by digest: (node id, mesh address).
    pub partials: BTreeMap<String, Vec<(String, String)>>,
}

impl Index {
    /// Reads the index from the latest view.
    pub fn read(mesh: &MeshHandle) -> Index {
        let mut index = Index::default();
        for (key, entry) in mesh.scan(Table::SPORES, "sha256:", MAX_LIST) {
            let value = entry.value.unwrap_or_default();
            let pair = |(d, n): (&str, &str)| {
                (
                    d.to_string(),
                    (n.to_string(), String::from_utf8_lossy(&value).into_owned()),
                )
            };
            if let Some((digest, holder)) = key.split_once("/holder/").map(pair) {
                index.holders.entry(digest).or_default().push(holder);
            } else if let Some((digest, node)) = key.split_once("/partial/").map(pair) {
                index.partials.entry(digest).or_default().push(node);
            } else {
                if let Ok(r) = serde_json::from_slice::<SporeRecord>(&value) {
                    index.records.insert(key, r);
                }
            }
        }
        index
    }
}
