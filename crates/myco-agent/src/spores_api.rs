//! HTTP for spores (`/v1/spores`) and trusted publishers (`/v1/trust`).
//!
//! The index lives in replicated state (table `spores`): `sha256:<hex>` maps
//! to the manifest summary, `sha256:<hex>/holder/<node id>` to the mesh
//! address of a node that holds the file, and `name/<name>@<version>` to the
//! digest. Trusted publisher keys live in table `trust`.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::VerifyingKey;
use myco_proto::Table;
use myco_proto::api::{SporeInfo, SporeRecord, TrustedKey};
use myco_spore::SporeError;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::api::{ApiState, error};
use crate::kv::{scan, write_durable};
use crate::spores::hex_of;

const MAX_LIST: usize = 100_000;

/// The trusted publisher keys, from replicated state.
async fn trusted(s: &ApiState) -> Result<Vec<VerifyingKey>, Response> {
    Ok(scan(s, Table::TRUST, "", MAX_LIST)
        .await?
        .into_iter()
        .filter_map(|(k, _)| parse_key(&k))
        .collect())
}

fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key.trim(), &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn refusal(e: &SporeError) -> Response {
    let code = match e {
        SporeError::Untrusted { .. } => StatusCode::FORBIDDEN,
        SporeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        SporeError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(code, format!("spore refused ({}): {e}", e.reason()))
}

/// `POST /v1/spores`: the body is a `.spore` file, streamed to disk,
/// verified, then indexed. Nothing is kept or indexed if it fails.
pub async fn push(State(s): State<ApiState>, body: Body) -> Response {
    let store = s.spores.clone();
    let max = store.limits().max_spore_bytes;
    let tmp = store.upload_path();
    let mut file = match tokio::fs::File::create(&tmp).await {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("spore store: {e}"),
            );
        }
    };
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return error(StatusCode::BAD_REQUEST, format!("upload interrupted: {e}"));
            }
        };
        size += chunk.len() as u64;
        if size > max {
            let _ = tokio::fs::remove_file(&tmp).await;
            store.count_refusal("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("spores are at most {max} bytes"),
            );
        }
        if let Err(e) = file.write_all(&chunk).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("spore store: {e}"),
            );
        }
    }
    if let Err(e) = file.sync_all().await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("spore store: {e}"),
        );
    }
    drop(file);
    let trusted = match trusted(&s).await {
        Ok(t) if t.is_empty() => {
            let _ = tokio::fs::remove_file(&tmp).await;
            store.count_refusal("untrusted");
            return error(
                StatusCode::FORBIDDEN,
                "no publisher is trusted yet: run `myco trust add KEY.pub` first",
            );
        }
        Ok(t) => t,
        Err(r) => return r,
    };
    let verified = match store.ingest(tmp, trusted).await {
        Ok(v) => v,
        Err(e) => return refusal(&e),
    };
    let m = &verified.manifest;
    let record = SporeRecord {
        name: m.name.clone(),
        version: m.version.clone(),
        size: verified.size,
        publisher: m.publisher.clone(),
        created_at: m.created_at,
    };
    let me = s.snapshot.borrow().me;
    let writes = [
        (
            verified.digest.clone(),
            serde_json::to_vec(&record).expect("records serialize"),
        ),
        (
            format!("{}/holder/{}", verified.digest, me.id),
            me.addr.to_string().into_bytes(),
        ),
        (
            format!("name/{}@{}", m.name, m.version),
            verified.digest.clone().into_bytes(),
        ),
    ];
    for (key, value) in writes {
        if let Err(r) = write_durable(&s, Table::SPORES, &key, Some(value)).await {
            return r;
        }
    }
    tracing::info!(digest = %verified.digest, name = %m.name, version = %m.version, size = verified.size, "spore stored");
    (
        StatusCode::CREATED,
        Json(json!({"digest": verified.digest})),
    )
        .into_response()
}

/// Every indexed spore with its holders.
async fn index(
    s: &ApiState,
) -> Result<
    (
        BTreeMap<String, SporeRecord>,
        BTreeMap<String, Vec<(String, String)>>,
    ),
    Response,
> {
    let mut records = BTreeMap::new();
    let mut holders: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (key, entry) in scan(s, Table::SPORES, "sha256:", MAX_LIST).await? {
        let value = entry.value.unwrap_or_default();
        match key.split_once("/holder/") {
            Some((digest, node)) => holders.entry(digest.to_string()).or_default().push((
                node.to_string(),
                String::from_utf8_lossy(&value).into_owned(),
            )),
            None => {
                if let Ok(r) = serde_json::from_slice::<SporeRecord>(&value) {
                    records.insert(key, r);
                }
            }
        }
    }
    Ok((records, holders))
}

/// `GET /v1/spores`.
pub async fn list(State(s): State<ApiState>) -> Response {
    let (records, holders) = match index(&s).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let out: Vec<SporeInfo> = records
        .into_iter()
        .map(|(digest, r)| SporeInfo {
            local: s.spores.has(&digest),
            holders: holders
                .get(&digest)
                .map(|h| h.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default(),
            digest,
            name: r.name,
            version: r.version,
            size: r.size,
            publisher: r.publisher,
        })
        .collect();
    Json(out).into_response()
}

/// `GET /v1/spores/{digest or NAME@VERSION}`: the file, fetched from a
/// holder first if this node does not have it.
pub async fn download(State(s): State<ApiState>, Path(which): Path<String>) -> Response {
    let digest = if hex_of(&which).is_some() {
        which
    } else {
        match scan(&s, Table::SPORES, &format!("name/{which}"), 2).await {
            Ok(found) => match found
                .into_iter()
                .find(|(k, _)| *k == format!("name/{which}"))
            {
                Some((_, e)) => String::from_utf8_lossy(&e.value.unwrap_or_default()).into_owned(),
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        format!("no spore {which:?}: want sha256:<hex> or NAME@VERSION"),
                    );
                }
            },
            Err(r) => return r,
        }
    };
    if !s.spores.has(&digest) {
        let (_, holders) = match index(&s).await {
            Ok(i) => i,
            Err(r) => return r,
        };
        let Some(holders) = holders.get(&digest) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no spore {digest} in the index"),
            );
        };
        // Alive holders first, in random order so no one holder takes every
        // fetch; holders membership reports down or left are not asked.
        let live: std::collections::BTreeSet<String> = s
            .snapshot
            .borrow()
            .members
            .iter()
            .filter(|m| m.state == myco_core::MemberState::Alive)
            .map(|m| m.peer.id.to_string())
            .collect();
        let mut addrs: Vec<std::net::SocketAddr> = holders
            .iter()
            .filter(|(id, _)| live.contains(id))
            .filter_map(|(_, a)| a.parse().ok())
            .collect();
        let spin = crate::datadir::random_bytes::<1>()[0] as usize;
        if !addrs.is_empty() {
            let n = addrs.len();
            addrs.rotate_left(spin % n);
        }
        let trusted = match trusted(&s).await {
            Ok(t) if t.is_empty() => {
                s.spores.count_refusal("untrusted");
                return error(
                    StatusCode::FORBIDDEN,
                    "no publisher is trusted: run `myco trust add KEY.pub` first",
                );
            }
            Ok(t) => t,
            Err(r) => return r,
        };
        if let Err(e) = s.spores.fetch(&digest, &addrs, trusted).await {
            return error(StatusCode::BAD_GATEWAY, e.to_string());
        }
        let me = s.snapshot.borrow().me;
        let key = format!("{digest}/holder/{}", me.id);
        if let Err(r) = write_durable(
            &s,
            Table::SPORES,
            &key,
            Some(me.addr.to_string().into_bytes()),
        )
        .await
        {
            return r;
        }
    }
    let path = s.spores.path(&digest).expect("digest checked");
    match tokio::fs::File::open(&path).await {
        Ok(f) => {
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("spore store: {e}"),
        ),
    }
}

/// `GET /v1/trust`.
pub async fn trust_list(State(s): State<ApiState>) -> Response {
    match scan(&s, Table::TRUST, "", MAX_LIST).await {
        Ok(keys) => Json(
            keys.into_iter()
                .map(|(key, e)| TrustedKey {
                    key,
                    comment: String::from_utf8_lossy(&e.value.unwrap_or_default()).into_owned(),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `POST /v1/trust {"key": HEX, "comment": TEXT}`.
pub async fn trust_add(State(s): State<ApiState>, body: axum::body::Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<TrustedKey>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be {\"key\": \"<64 hex digits>\", \"comment\": \"...\"}",
        );
    };
    let key = req.key.trim().to_ascii_lowercase();
    if parse_key(&key).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "not an Ed25519 public key: want the 64 hex digits of a KEY.pub file",
        );
    }
    match write_durable(&s, Table::TRUST, &key, Some(req.comment.into_bytes())).await {
        Ok(_) => (StatusCode::CREATED, Json(json!({"trusted": key}))).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /v1/trust/{key}`.
pub async fn trust_remove(State(s): State<ApiState>, Path(key): Path<String>) -> Response {
    match write_durable(&s, Table::TRUST, &key.to_ascii_lowercase(), None).await {
        Ok(_) => Json(json!({"removed": key})).into_response(),
        Err(r) => r,
    }
}

/// Garbage collection: deletes local spores that no job references and
/// that are older than `retention`, and removes this node as their holder
/// from the index. References are digests (`sha256:<hex>`) or
/// `NAME@VERSION`s found anywhere in a job's definition. Returns how many
/// spores were removed.
pub async fn collect_garbage(
    s: &ApiState,
    retention: std::time::Duration,
) -> Result<usize, Response> {
    let names = scan(s, Table::SPORES, "name/", MAX_LIST).await?;
    let mut referenced = std::collections::BTreeSet::new();
    for (_, entry) in scan(s, Table::JOBS, "", MAX_LIST).await? {
        let text = String::from_utf8_lossy(&entry.value.unwrap_or_default()).into_owned();
        for (i, _) in text.match_indices("sha256:") {
            if let Some(d) = text.get(i..i + 71).filter(|d| hex_of(d).is_some()) {
                referenced.insert(d.to_string());
            }
        }
        for (name, e) in &names {
            if text.contains(name.trim_start_matches("name/")) {
                referenced.insert(
                    String::from_utf8_lossy(e.value.as_deref().unwrap_or_default()).into_owned(),
                );
            }
        }
    }
    let me = s.snapshot.borrow().me;
    let mut removed = 0;
    for (digest, age) in s.spores.local_spores() {
        if referenced.contains(&digest) || age < retention {
            continue;
        }
        let key = format!("{digest}/holder/{}", me.id);
        write_durable(s, Table::SPORES, &key, None).await?;
        if let Some(path) = s.spores.path(&digest) {
            let _ = tokio::fs::remove_file(path).await;
        }
        tracing::info!(%digest, "spore removed: no job references it");
        removed += 1;
    }
    Ok(removed)
}

/// `POST /v1/spores/gc`: runs garbage collection now (it also runs hourly).
pub async fn gc(State(s): State<ApiState>) -> Response {
    match collect_garbage(&s, s.spore_retention).await {
        Ok(n) => Json(json!({"removed": n})).into_response(),
        Err(r) => r,
    }
}
