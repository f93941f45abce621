//! A store file written by release r1 (`tests/fixtures/r1/state.redb`):
//! every later release must open it and read the same changes, migrating
//! it in place if its format moved on (ARCHITECTURE.md, "Upgrades").
//! `MYCO_BLESS=1` writes it anew, for a new release's directory only.

use std::path::{Path, PathBuf};

use myco_agent::store::Store;
use myco_proto::{Change, NodeId, Table, Timestamp};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/r1/state.redb")
}

fn ts(wall_ms: u64) -> Timestamp {
    Timestamp {
        wall_ms,
        logical: 1,
        node: NodeId::from_u64(7),
    }
}

/// What r1 wrote: a value, an empty value, a tombstone, across tables.
fn changes() -> Vec<Change> {
    let change = |table, key: &str, wall, value: Option<&[u8]>| Change {
        table,
        key: key.into(),
        ts: ts(wall),
        value: value.map(<[u8]>::to_vec),
    };
    vec![
        change(Table::KV, "app/colour", 1_764_000_000_000, Some(b"blue")),
        change(Table::KV, "app/empty", 1_764_000_000_001, Some(b"")),
        change(Table::KV, "app/gone", 1_764_000_000_002, None),
        change(Table::JOBS, "hello", 1_764_000_000_003, Some(&[1, 2, 3])),
    ]
}

fn sorted(mut c: Vec<Change>) -> Vec<Change> {
    c.sort_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
    c
}

#[tokio::test]
async fn a_store_written_by_release_r1_opens_with_its_changes() {
    if std::env::var_os("MYCO_BLESS").is_some() {
        let _ = std::fs::remove_file(fixture());
        std::fs::create_dir_all(fixture().parent().unwrap()).unwrap();
        let (store, _) = Store::open(&fixture()).unwrap();
        store.persist(changes()).await.unwrap();
        store.close().await;
    }
    // Work on a copy: opening may migrate the file in place.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store-fixture-r1");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("state.redb");
    std::fs::copy(fixture(), &copy).expect("the r1 store fixture is in the repository");
    let (store, loaded) = tokio::task::spawn_blocking(move || Store::open(&copy))
        .await
        .unwrap()
        .unwrap();
    assert!(
        loaded.recovered.is_none(),
        "r1's store opened as damaged: {:?}",
        loaded.recovered
    );
    assert_eq!(sorted(loaded.changes), sorted(changes()));
    store.close().await;
}
