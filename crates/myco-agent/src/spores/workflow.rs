//! What happens to spores, as domain operations: push (upload, verify,
//! keep, index), download (resolve, fetch from a holder, index this node as
//! one), trust, and garbage collection. Each returns a typed
//! [`SporeFlowError`]; the HTTP layer only maps it to a status code. Index
//! writes go through [`MeshHandle::write`], so each is durable and released
//! to peers before the next step.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use myco_core::MemberState;
use myco_proto::Table;
use myco_proto::api::{SporeInfo, SporeRecord, TrustedKey};
use myco_spore::{SporeError, Verified};
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};

use super::FetchError;
use super::download::Source;
use super::index::{self, Index, MAX_LIST};
use super::store::{SporeStore, hex_of};
use crate::mesh::{MeshHandle, WriteError};

/// Why a spore operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SporeFlowError {
    /// The upload passed the size limit; nothing was kept.
    #[error("spores are at most {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The client stopped sending; nothing was kept.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// No publisher is trusted, so no spore can be accepted.
    #[error("no publisher is trusted yet: run `myco trust add KEY.pub` first")]
    NoTrustedPublisher,
    /// The spore failed verification; nothing was kept.
    #[error("spore refused ({reason}): {source}", reason = .source.reason())]
    Refused {
        /// What verification found.
        #[source]
        source: SporeError,
    },
    /// No such spore, name or key.
    #[error("{0}")]
    NotFound(String),
    /// Not a publisher key.
    #[error("not an Ed25519 public key: want the 64 hex digits of a KEY.pub file")]
    BadKey,
    /// The spore could not be fetched from its holders.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// An index write was not acknowledged.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Local disk trouble.
    #[error("spore store: {0}")]
    Io(#[from] std::io::Error),
    /// Not local, and the gate on unauthenticated fetches is closed.
    #[error(
        "spore {0} is not on this node and an unauthenticated fetch ran recently: retry in a few seconds, or send the API token"
    )]
    AnonFetchBusy(String),
}

/// The spore workflows over the content store and the mesh.
pub struct Spores {
    store: Arc<SporeStore>,
    mesh: MeshHandle,
    retention: Duration,
    anon: super::anon::AnonFetchGate,
}

impl Spores {
    /// Workflows over `store`, writing the index through `mesh`; spores no
    /// job references are kept `retention` before garbage collection.
    pub fn new(store: Arc<SporeStore>, mesh: MeshHandle, retention: Duration) -> Spores {
        Spores {
            store,
            mesh,
            retention,
            anon: Default::default(),
        }
    }

    /// The content store.
    pub fn store(&self) -> &Arc<SporeStore> {
        &self.store
    }

    /// Push: streams an upload to a temp file, verifies it against the
    /// trusted publishers, keeps it under its digest and indexes it (with
    /// this node as a holder). Nothing is kept or indexed on failure.
    /// Returns the digest.
    pub async fn push<B, E>(
        &self,
        body: impl Stream<Item = Result<B, E>> + Unpin,
    ) -> Result<String, SporeFlowError>
    where
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let tmp = self.store.upload_path();
        if let Err(e) = self.upload(body, &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let trusted = index::trusted(&self.mesh);
        if trusted.is_empty() {
            let _ = tokio::fs::remove_file(&tmp).await;
            self.store.count_refusal("untrusted");
            return Err(SporeFlowError::NoTrustedPublisher);
        }
        let verified = self
            .store
            .ingest(tmp, trusted)
            .await
            .map_err(|source| SporeFlowError::Refused { source })?;
        self.record(&verified).await?;
        let m = &verified.manifest;
        tracing::info!(digest = %verified.digest, name = %m.name, version = %m.version, size = verified.size, "spore stored");
        Ok(verified.digest)
    }

    /// Writes the body to `tmp`, refusing it past the size limit.
    async fn upload<B, E>(
        &self,
        mut body: impl Stream<Item = Result<B, E>> + Unpin,
        tmp: &std::path::Path,
    ) -> Result<(), SporeFlowError>
    where
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let max = self.store.limits().max_spore_bytes;
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| SporeFlowError::Interrupted(e.to_string()))?;
            let chunk = chunk.as_ref();
            size += chunk.len() as u64;
            if size > max {
                self.store.count_refusal("too_large");
                return Err(SporeFlowError::TooLarge { max });
            }
            file.write_all(chunk).await?;
        }
        file.sync_all().await?;
        Ok(())
    }

    /// Indexes a verified spore held here: its summary, this node as a
    /// holder, its name.
    async fn record(&self, verified: &Verified) -> Result<(), SporeFlowError> {
        let m = &verified.manifest;
        let record = SporeRecord {
            name: m.name.clone(),
            version: m.version.clone(),
            size: verified.size,
            publisher: m.publisher.clone(),
            created_at: m.created_at,
        };
        let me = self.mesh.me();
        let writes = [
            (
                verified.digest.clone(),
                serde_json::to_vec(&record).expect("records serialize"),
            ),
            (
                index::holder_key(&verified.digest, &me.id),
                me.addr.to_string().into_bytes(),
            ),
            (
                index::name_key(&format!("{}@{}", m.name, m.version)),
                verified.digest.clone().into_bytes(),
            ),
        ];
        for (key, value) in writes {
            self.mesh.write(Table::SPORES, &key, Some(value)).await?;
        }
        Ok(())
    }

    /// Every indexed spore with its holders and whether this node has it.
    pub async fn list(&self) -> Vec<SporeInfo> {
        let Index {
            records, holders, ..
        } = Index::read(&self.mesh);
        let mut out = Vec::with_capacity(records.len());
        for (digest, r) in records {
            out.push(SporeInfo {
                local: self.store.has(&digest).await,
                holders: holders
                    .get(&digest)
                    .map(|h| h.iter().map(|(n, _)| n.clone()).collect())
                    .unwrap_or_default(),
                digest,
                name: r.name,
                version: r.version,
                size: r.size,
                publisher: r.publisher,
            });
        }
        out
    }

    /// Makes sure this node holds a spore (`sha256:<hex>` or
    /// `NAME@VERSION`): fetched from a live holder if not, then indexed with
    /// this node as a holder. Returns the local file.
    pub async fn open(&self, which: &str) -> Result<PathBuf, SporeFlowError> {
        self.open_as(which, true).await
    }

    /// [`Spores::open`]; when not `may_fetch` (the caller has no token) a
    /// fetch goes through the bounded gate of `spores::anon`: one at a
    /// time, one start per 10 s, so an open read cannot flood holders.
    pub async fn open_as(&self, which: &str, may_fetch: bool) -> Result<PathBuf, SporeFlowError> {
        let digest = if hex_of(which).is_some() {
            which.to_string()
        } else {
            index::digest_of(&self.mesh, which).ok_or_else(|| {
                SporeFlowError::NotFound(format!(
                    "no spore {which:?}: want sha256:<hex> or NAME@VERSION"
                ))
            })?
        };
        if !self.store.has(&digest).await {
            if may_fetch {
                self.fetch(&digest).await?;
            } else {
                // Unauthenticated: only through the bounded gate (see
                // `spores::anon`), so open reads cannot flood holders; a
                // digest nobody holds is a 404 and never takes the gate.
                if !Index::read(&self.mesh).holders.contains_key(&digest) {
                    return Err(SporeFlowError::NotFound(format!(
                        "no spore {digest} in the index"
                    )));
                }
                let Some(_permit) = self.anon.try_start(std::time::Instant::now()) else {
                    return Err(SporeFlowError::AnonFetchBusy(which.to_string()));
                };
                self.fetch(&digest).await?;
            }
        }
        self.store
            .path(&digest)
            .ok_or_else(|| SporeFlowError::NotFound(format!("no spore {digest:?}")))
    }

    async fn fetch(&self, digest: &str) -> Result<(), SporeFlowError> {
        if !Index::read(&self.mesh).holders.contains_key(digest) {
            return Err(SporeFlowError::NotFound(format!(
                "no spore {digest} in the index"
            )));
        }
        let trusted = index::trusted(&self.mesh);
        if trusted.is_empty() {
            self.store.count_refusal("untrusted");
            return Err(SporeFlowError::NoTrustedPublisher);
        }
        let me = self.mesh.me();
        // Others fetching it meanwhile may ask this node for the part it
        // has; the key goes when the fetch ends, whatever the outcome.
        let partial = index::partial_key(digest, &me.id);
        let addr = me.addr.to_string().into_bytes();
        self.mesh
            .write(Table::SPORES, &partial, Some(addr.clone()))
            .await?;
        let spin = crate::config::datadir::random_bytes::<1>()[0] as usize;
        let sources = move || self.sources(digest, spin);
        let fetched = self.store.fetch(digest, &sources, trusted).await;
        let unlisted = self.mesh.write(Table::SPORES, &partial, None).await;
        fetched?;
        unlisted?;
        let key = index::holder_key(digest, &me.id);
        self.mesh.write(Table::SPORES, &key, Some(addr)).await?;
        Ok(())
    }

    /// The live nodes holding or fetching `digest`, holders first. Each
    /// group is rotated by `spin` so that not every fetch starts with the
    /// same node; nodes membership reports down or left are not asked.
    fn sources(&self, digest: &str, spin: usize) -> Vec<Source> {
        let Index {
            holders, partials, ..
        } = Index::read(&self.mesh);
        let live: BTreeSet<String> = self
            .mesh
            .snapshot()
            .members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.peer.id.to_string())
            .collect();
        let pick = |nodes: Option<&Vec<(String, String)>>, complete: bool| {
            let mut found: Vec<Source> = nodes
                .into_iter()
                .flatten()
                .filter(|(id, _)| live.contains(id))
                .filter_map(|(_, a)| a.parse::<SocketAddr>().ok())
                .map(|addr| Source { addr, complete })
                .collect();
            if !found.is_empty() {
                let n = found.len();
                found.rotate_left(spin % n);
            }
            found
        };
        let mut all = pick(holders.get(digest), true);
        all.extend(pick(partials.get(digest), false));
        all
    }

    /// The trusted publisher keys with their comments.
    pub fn trust_list(&self) -> Vec<TrustedKey> {
        self.mesh
            .scan(Table::TRUST, "", MAX_LIST)
            .into_iter()
            .map(|(key, e)| TrustedKey {
                key,
                comment: String::from_utf8_lossy(&e.value.unwrap_or_default()).into_owned(),
            })
            .collect()
    }

    /// Trusts a publisher key (hex). Returns the key as stored.
    pub async fn trust_add(&self, key: &str, comment: String) -> Result<String, SporeFlowError> {
        let key = key.trim().to_ascii_lowercase();
        if index::parse_key(&key).is_none() {
            return Err(SporeFlowError::BadKey);
        }
        self.mesh
            .write(Table::TRUST, &key, Some(comment.into_bytes()))
            .await?;
        Ok(key)
    }

    /// Stops trusting a publisher key (hex). Returns the key as stored.
    /// Only the shape is checked (64 hex digits), not that it is a curve
    /// point: a key trusted by an older release stays removable.
    pub async fn trust_remove(&self, key: &str) -> Result<String, SporeFlowError> {
        let key = key.trim().to_ascii_lowercase();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SporeFlowError::BadKey);
        }
        if self
            .mesh
            .get(Table::TRUST, &key)
            .and_then(|e| e.value)
            .is_none()
        {
            return Err(SporeFlowError::NotFound(format!(
                "key {key} is not trusted; `myco trust list` lists the trusted keys"
            )));
        }
        self.mesh.write(Table::TRUST, &key, None).await?;
        Ok(key)
    }

    /// Garbage collection: deletes local spores that no job references and
    /// that are older than the retention, and removes this node as their
    /// holder from the index (first, so no one asks it for them after).
    /// References are digests (`sha256:<hex>`) or `NAME@VERSION`s found
    /// anywhere in a job's definition. Returns how many were removed.
    pub async fn collect_garbage(&self) -> Result<usize, SporeFlowError> {
        let names = self.mesh.scan(Table::SPORES, "name/", MAX_LIST);
        let mut referenced = BTreeSet::new();
        for (_, entry) in self.mesh.scan(Table::JOBS, "", MAX_LIST) {
            let text = String::from_utf8_lossy(&entry.value.unwrap_or_default()).into_owned();
            for (i, _) in text.match_indices("sha256:") {
                if let Some(d) = text.get(i..i + 71).filter(|d| hex_of(d).is_some()) {
                    referenced.insert(d.to_string());
                }
            }
            for (name, e) in &names {
                if text.contains(name.trim_start_matches("name/")) {
                    referenced.insert(
                        String::from_utf8_lossy(e.value.as_deref().unwrap_or_default())
                            .into_owned(),
                    );
                }
            }
        }
        let me = self.mesh.me();
        let mut removed = 0;
        for (digest, age) in self.store.local_spores().await {
            if referenced.contains(&digest) || age < self.retention {
                continue;
            }
            let key = index::holder_key(&digest, &me.id);
            self.mesh.write(Table::SPORES, &key, None).await?;
            if let Err(e) = self.store.remove(&digest).await {
                tracing::warn!(%digest, error = %e, "spore unindexed but its file stays");
            }
            tracing::info!(%digest, "spore removed: no job references it");
            removed += 1;
        }
        Ok(removed)
    }
}
