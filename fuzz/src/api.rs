//! JSON bodies: what the agent's API reads from clients, what the CLI reads
//! from an agent, and the JSON records kept in replicated state.

use myco_proto::api::{
    ApiError, ApiEvent, KvEntry, KvWritten, NodeInfo, PeerAdd, SporeInfo, SporeRecord, Status,
    TrustedKey,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte picks the shape; the rest is the body.
pub fn api_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => round_trip::<PeerAdd>(body),
        1 => round_trip::<TrustedKey>(body),
        2 => round_trip::<SporeRecord>(body),
        3 => round_trip::<NodeInfo>(body),
        4 => round_trip::<Vec<NodeInfo>>(body),
        5 => round_trip::<Status>(body),
        6 => round_trip::<KvEntry>(body),
        7 => round_trip::<Vec<KvEntry>>(body),
        8 => round_trip::<KvWritten>(body),
        9 => round_trip::<ApiEvent>(body),
        10 => round_trip::<SporeInfo>(body),
        _ => {
            round_trip::<ApiError>(body);
            faults_body(body);
        }
    }
}

/// Parses, and if that works, checks that the value writes back to JSON
/// that parses to the same value.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(body) else {
        return;
    };
    let again = serde_json::to_vec(&value).expect("API shapes always serialize");
    assert_eq!(serde_json::from_slice::<T>(&again).ok(), Some(value));
}

/// The `POST /v1/debug/faults` body, read as the agent reads it.
fn faults_body(body: &[u8]) {
    let _ = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("block")?
                .as_array()?
                .iter()
                .map(|a| a.as_str()?.parse::<std::net::SocketAddr>().ok())
                .collect::<Option<Vec<_>>>()
        });
}
