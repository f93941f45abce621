//! One method per API resource, each a few lines over the generic calls.
//! Shapes come from `myco_proto::api`; the few answers the agent still
//! writes ad hoc (`json!`) have their reading side here.

use std::io::Read;

use myco_proto::api::{
    KvEntry, KvPage, KvWritten, NodeInfo, PeerAdd, SporeInfo, Status, TrustedKey,
};
use serde::Deserialize;
use serde_json::Value;
use ureq::http::Method;

use crate::client::Body;
use crate::{Client, ClientError, EventStream, Result, key_path, segment};

/// The header a KV read carries the value's version in.
const VERSION_HEADER: &str = "x-myco-version";

/// `GET /health`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// `ok` while the agent serves.
    pub status: String,
    /// The node id.
    pub node: String,
    /// Whether it sees at least one live peer.
    pub connected: bool,
    /// The Myco version it runs.
    pub version: String,
}

/// The answer to `POST /v1/peers`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Joining {
    /// The resolved mesh address being joined.
    pub joining: String,
}

/// The answer to `POST /v1/spores`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:<hex>` of the stored spore.
    pub digest: String,
}

/// The answer to `POST /v1/spores/gc`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct GcReport {
    /// How many local spores were removed.
    pub removed: u64,
}

/// A KV value as `GET /v1/kv/{key}` returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvValue {
    /// The value, as stored.
    pub value: Vec<u8>,
    /// Its version (`WALL-LOGICAL-NODE`).
    pub version: String,
}

impl Client {
    /// `GET /health`: open even where other reads need the token.
    pub fn health(&self) -> Result<Health> {
        self.get("/health")
    }

    /// `GET /metrics`: Prometheus text.
    pub fn metrics(&self) -> Result<String> {
        self.get_text("/metrics")
    }

    /// `GET /v1/status`: this node and a summary of the mesh.
    pub fn status(&self) -> Result<Status> {
        self.get("/v1/status")
    }

    /// `GET /v1/nodes`: every member, this node included.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.get("/v1/nodes")
    }

    /// `GET /v1/nodes/{id or name}`.
    pub fn node(&self, id_or_name: &str) -> Result<NodeInfo> {
        self.get(&format!("/v1/nodes/{}", segment(id_or_name)))
    }

    /// `GET /v1/peers`: the members but this node.
    pub fn peers(&self) -> Result<Vec<NodeInfo>> {
        self.get("/v1/peers")
    }

    /// `POST /v1/peers`: join the mesh of the peer at `addr` (its mesh
    /// `HOST:PORT`). Needs the token.
    pub fn peer_add(&self, addr: &str) -> Result<Joining> {
        self.post(
            "/v1/peers",
            &PeerAdd {
                addr: addr.to_string(),
            },
        )
    }

    /// `GET /v1/cluster/key`: the key file's text. Needs the token.
    pub fn cluster_key(&self) -> Result<String> {
        self.get_text("/v1/cluster/key")
    }

    /// `GET /v1/kv/{key}`: the value and its version; a missing key is an
    /// [`ClientError::Api`] error with status 404 (see
    /// [`ClientError::is_not_found`]).
    pub fn kv_get(&self, key: &str) -> Result<KvValue> {
        let path = format!("/v1/kv/{}", key_path(key));
        let answer = self.call(Method::GET, &path, Body::Empty)?;
        let version = answer
            .headers
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Decode {
                url: self.url(&path),
                what: format!("no {VERSION_HEADER} header"),
            })?
            .to_string();
        Ok(KvValue {
            value: answer.body,
            version,
        })
    }

    /// `PUT /v1/kv/{key}`: answered once the write is durable on this node.
    /// Needs the token.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> Result<KvWritten> {
        self.put(&format!("/v1/kv/{}", key_path(key)), value)
    }

    /// `DELETE /v1/kv/{key}`. Needs the token.
    pub fn kv_del(&self, key: &str) -> Result<KvWritten> {
        self.delete(&format!("/v1/kv/{}", key_path(key)))
    }

    /// `GET /v1/kv?prefix=P`: every entry under a prefix, in key order,
    /// following the pages' cursors to the end.
    pub fn kv_list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.kv_page(prefix, cursor.as_deref(), None)?;
            all.extend(page.entries);
            match page.next {
                // A cursor that does not move would loop for ever.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// One page of `GET /v1/kv?prefix=P`, from `cursor` (the `next` of the
    /// page before; `None` for the first), of at most `limit` entries (the
    /// agent's default when `None`).
    pub fn kv_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<KvPage> {
        let mut path = format!("/v1/kv?prefix={}", segment(prefix));
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", segment(c)));
        }
        if let Some(n) = limit {
            path.push_str(&format!("&limit={n}"));
        }
        self.get(&path)
    }

    /// `GET /v1/events`: state and membership changes as they happen.
    pub fn events(&self) -> Result<EventStream> {
        self.event_stream("/v1/events")
    }

    /// `GET /v1/spores`: every spore the mesh knows, with its holders.
    pub fn spores(&self) -> Result<Vec<SporeInfo>> {
        self.get("/v1/spores")
    }

    /// `POST /v1/spores`: uploads a `.spore` file, streamed from `file`.
    /// Needs the token.
    pub fn spore_push(&self, file: impl Read + Send) -> Result<Pushed> {
        self.post_reader("/v1/spores", file)
    }

    /// `GET /v1/spores/{digest or NAME@VERSION}` into `out` (the agent
    /// fetches it from a holder first if it has none); the bytes written.
    pub fn spore_download(&self, which: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        self.get_into(&format!("/v1/spores/{}", segment(which)), out)
    }

    /// `POST /v1/spores/gc`: collect unreferenced local spores now. Needs
    /// the token.
    pub fn spores_gc(&self) -> Result<GcReport> {
        let path = "/v1/spores/gc";
        let answer = self.call(Method::POST, path, Body::Bytes(b""))?;
        self.decode(path, &answer.body)
    }

    /// `GET /v1/trust`: the trusted publisher keys.
    pub fn trust_list(&self) -> Result<Vec<TrustedKey>> {
        self.get("/v1/trust")
    }

    /// `POST /v1/trust`: trust a publisher key. Needs the token.
    pub fn trust_add(&self, key: &TrustedKey) -> Result<()> {
        self.post::<_, Value>("/v1/trust", key).map(drop)
    }

    /// `DELETE /v1/trust/{key}`: stop trusting a key (hex). Needs the token.
    pub fn trust_remove(&self, key: &str) -> Result<()> {
        self.delete::<Value>(&format!("/v1/trust/{}", segment(key.trim())))
            .map(drop)
    }

    /// `POST /v1/debug/faults`: cut this node off from the given peers'
    /// mesh addresses, both ways; an empty list heals. Only on agents
    /// started with `MYCO_FAULTS=1` (404 otherwise). Needs the token.
    pub fn faults_block(&self, mesh_addrs: &[String]) -> Result<()> {
        self.post::<_, Value>(
            "/v1/debug/faults",
            &serde_json::json!({ "block": mesh_addrs }),
        )
        .map(drop)
    }
}
