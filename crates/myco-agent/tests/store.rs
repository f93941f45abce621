//! The durable store: round trips, newest-wins, tombstones, group commit,
//! damage handling, and a SIGKILL crash test against a child process.
//!
//! Why one file of this length: each case sets up its own store so it
//! reads on its own, and they share one test binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_agent::store::{Backlog, Loaded, Recovery, Store, StoreError, StoreStats};
use myco_proto::{Change, NodeId, Table, Timestamp};

/// The table name and key layout of the store's format 1, for tests that
/// plant records the store would never write.
const CHANGES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("changes");

/// A fresh directory under the target dir (a real file system, so fsync
/// costs what it costs in production), and the store path inside it.
fn store_path(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("store-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.redb")
}

fn ts(wall_ms: u64) -> Timestamp {
    Timestamp {
        wall_ms,
        logical: 0,
        node: NodeId([7; 8]),
    }
}

fn put(table: Table, key: &str, wall_ms: u64, value: &str) -> Change {
    Change {
        table,
        key: key.to_owned(),
        ts: ts(wall_ms),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn tombstone(table: Table, key: &str, wall_ms: u64) -> Change {
    Change {
        table,
        key: key.to_owned(),
        ts: ts(wall_ms),
        value: None,
    }
}

fn open(path: &Path) -> (Store, Loaded) {
    Store::open(path).expect("store opens")
}

/// Reopens and returns the stored changes by (table, key).
async fn reopen(path: &Path) -> BTreeMap<(Table, String), Change> {
    let (store, loaded) = open(path);
    assert_eq!(loaded.recovered, None);
    store.close().await;
    loaded
        .changes
        .into_iter()
        .map(|c| ((c.table, c.key.clone()), c))
        .collect()
}

#[tokio::test]
async fn round_trip() {
    let path = store_path("round-trip");
    let (store, loaded) = open(&path);
    assert!(loaded.changes.is_empty());
    assert_eq!(loaded.recovered, None);
    let mut written = vec![
        put(Table::KV, "a", 1, "one"),
        put(Table::KV, "b", 2, ""),
        put(Table::JOBS, "a", 3, "job"),
        tombstone(Table::SPORES, "gone", 4),
        put(Table(200), "future-table", 5, "kept"),
    ];
    store.persist(written.clone()).await.unwrap();
    store.close().await;

    let (store, loaded) = open(&path);
    let mut read = loaded.changes;
    read.sort_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
    written.sort_by(|a, b| (a.table, &a.key).cmp(&(b.table, &b.key)));
    assert_eq!(read, written);
    assert_eq!(
        store.stats(),
        StoreStats::default(),
        "reading writes nothing"
    );
}

#[tokio::test]
async fn newer_wins_on_disk_and_older_is_skipped() {
    let path = store_path("newer-wins");
    let (store, _) = open(&path);
    store
        .persist(vec![put(Table::KV, "k", 5, "five")])
        .await
        .unwrap();
    store
        .persist(vec![put(Table::KV, "k", 3, "three")])
        .await
        .unwrap();
    store
        .persist(vec![put(Table::KV, "k", 5, "five again")])
        .await
        .unwrap();
    // Within one batch too: the later, older change loses.
    store
        .persist(vec![
            put(Table::KV, "j", 9, "nine"),
            put(Table::KV, "j", 7, "seven"),
        ])
        .await
        .unwrap();
    let stats = store.stats();
    assert_eq!(stats.changes_written, 2);
    assert_eq!(stats.skipped_not_newer, 3);
    store
        .persist(vec![put(Table::KV, "k", 6, "six")])
        .await
        .unwrap();
    store.close().await;

    let stored = reopen(&path).await;
    assert_eq!(
        stored[&(Table::KV, "k".into())],
        put(Table::KV, "k", 6, "six")
    );
    assert_eq!(
        stored[&(Table::KV, "j".into())],
        put(Table::KV, "j", 9, "nine")
    );
}

#[tokio::test]
async fn tombstones_persist_and_gc_removes_only_what_it_covers() {
    let path = store_path("tombstones");
    let (store, _) = open(&path);
    store
        .persist(vec![
            put(Table::KV, "k", 1, "v"),
            put(Table::KV, "live", 1, "v"),
        ])
        .await
        .unwrap();
    store
        .persist(vec![tombstone(Table::KV, "k", 2)])
        .await
        .unwrap();
    store
        .persist(vec![put(Table::KV, "k", 1, "resurrected?")])
        .await
        .unwrap();
    store.close().await;
    let stored = reopen(&path).await;
    assert_eq!(
        stored[&(Table::KV, "k".into())],
        tombstone(Table::KV, "k", 2)
    );

    let (store, _) = open(&path);
    store
        .persist(vec![tombstone(Table::KV, "t", 5)])
        .await
        .unwrap();
    let mut backlog = Backlog::default();
    let doomed = vec![
        (Table::KV, "k".into(), ts(2)),
        // Written again after the tombstone the GC saw: must stay.
        (Table::KV, "live".into(), ts(0)),
        (Table::KV, "absent".into(), ts(9)),
    ];
    backlog.remove(&store, doomed).await.unwrap();
    backlog.finish(&store).await.unwrap();
    store.persist(vec![]).await.unwrap();
    assert_eq!(store.stats().removed, 1);
    store.close().await;
    let stored = reopen(&path).await;
    assert!(!stored.contains_key(&(Table::KV, "k".into())));
    assert!(stored.contains_key(&(Table::KV, "live".into())));
    assert_eq!(
        stored[&(Table::KV, "t".into())],
        tombstone(Table::KV, "t", 5)
    );
}

#[tokio::test]
async fn background_writes_are_durable_after_a_barrier() {
    let path = store_path("background");
    let (store, _) = open(&path);
    let mut backlog = Backlog::default();
    for i in 0..100 {
        let change = put(Table::KV, &format!("k{i}"), 1, "v");
        backlog.persist(&store, vec![change]).await.unwrap();
    }
    backlog.finish(&store).await.unwrap();
    store.persist(vec![]).await.unwrap();
    assert_eq!(store.stats().changes_written, 100);
    store.close().await;
    assert_eq!(reopen(&path).await.len(), 100);
}

#[tokio::test]
async fn a_full_queue_loses_nothing_through_the_backlog() {
    let path = store_path("backlog");
    let (store, _) = open(&path);
    let mut backlog = Backlog::default();
    // Far more requests than the queue holds, faster than the writer takes
    // them: some wait in the backlog, in order, none is dropped. A write
    // then a removal of the same key must reach the disk in that order.
    for i in 0..5000 {
        backlog
            .persist(&store, vec![put(Table::KV, &format!("k{i}"), 1, "v")])
            .await
            .unwrap();
    }
    backlog
        .remove(&store, vec![(Table::KV, "k7".to_string(), ts(1))])
        .await
        .unwrap();
    assert!(
        store.stats().queue_full > 0,
        "the queue never filled: the test proves nothing"
    );
    backlog.finish(&store).await.unwrap();
    store.persist(vec![]).await.unwrap();
    store.close().await;
    let kept = reopen(&path).await;
    assert_eq!(kept.len(), 4999);
    assert!(!kept.contains_key(&(Table::KV, "k7".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits() {
    let path = store_path("group-commit");
    let (store, _) = open(&path);
    let store = Arc::new(store);
    let start = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (store, start) = (store.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store
                    .persist(vec![put(Table::KV, &format!("key-{i}"), 1, "v")])
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.changes_written, 1000);
    assert!(stats.transactions < 200, "no group commit: {stats:?}");
    assert_eq!(stats.fsyncs, 2 * stats.transactions);
    Arc::into_inner(store).unwrap().close().await;
    let stored = reopen(&path).await;
    assert!((0..1000).all(|i| stored.contains_key(&(Table::KV, format!("key-{i}")))));
}

#[tokio::test]
async fn an_idle_store_writes_nothing() {
    let path = store_path("idle");
    let (store, _) = open(&path);
    // Empty requests travel the whole queue (a barrier) but commit nothing.
    store.persist(vec![]).await.unwrap();
    assert_eq!(store.stats(), StoreStats::default());
    store
        .persist(vec![put(Table::KV, "k", 1, "v")])
        .await
        .unwrap();
    let after_write = store.stats();
    assert_eq!(after_write.transactions, 1);
    for _ in 0..10 {
        tokio::task::yield_now().await;
        store.persist(vec![]).await.unwrap();
    }
    assert_eq!(store.stats(), after_write);
}

#[tokio::test]
async fn a_second_open_is_refused_and_moves_nothing() {
    let path = store_path("locked");
    let (store, _) = open(&path);
    store
        .persist(vec![put(Table::KV, "k", 1, "v")])
        .await
        .unwrap();
    let err = Store::open(&path).expect_err("second open refused");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
    store
        .persist(vec![put(Table::KV, "k", 2, "w")])
        .await
        .unwrap();
    store.close().await;
    assert_eq!(reopen(&path).await.len(), 1);
}

/// How the store was left before its file was damaged.
#[derive(Clone, Copy)]
enum Left {
    /// Closed cleanly (redb's shutdown commit is then the newest).
    Closed,
    /// Crashed: the file as it was while open, with our last commit newest.
    Crashed,
}

/// Writes a store with recognisable values, leaves it as `left` says,
/// damages the file with `damage`, and checks the reopen: no panic, file
/// moved aside, damage reported, store empty and usable.
async fn survives_damage(test: &str, left: Left, damage: impl FnOnce(&mut Vec<u8>)) {
    let path = store_path(test);
    let (store, _) = open(&path);
    let marker = "MYCO-MARKER-".repeat(20);
    for i in 0..50 {
        store
            .persist(vec![put(Table::KV, &format!("k{i}"), 1, &marker)])
            .await
            .unwrap();
    }
    let latest = "MYCO-LATEST-".repeat(20);
    store
        .persist(vec![put(Table::KV, "latest", 1, &latest)])
        .await
        .unwrap();
    // Every commit is durable and an idle store writes nothing, so the file
    // read while open is what a crash would leave.
    let crashed = std::fs::read(&path).unwrap();
    store.close().await;
    let mut bytes = match left {
        Left::Closed => std::fs::read(&path).unwrap(),
        Left::Crashed => crashed,
    };
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();

    let (store, loaded) = Store::open(&path).expect("a damaged store opens empty");
    let Some(Recovery::MovedAside { moved_to, reason }) = loaded.recovered else {
        panic!("damage not reported: {:?}", loaded.recovered);
    };
    assert!(loaded.changes.is_empty());
    assert!(!reason.is_empty());
    assert_eq!(
        std::fs::read(&moved_to).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    let name = moved_to.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("state.redb.corrupt-"), "{name}");
    store
        .persist(vec![put(Table::KV, "after", 2, "v")])
        .await
        .unwrap();
    store.close().await;
    assert_eq!(reopen(&path).await.len(), 1);
}

#[tokio::test]
async fn garbage_over_the_file_is_moved_aside() {
    survives_damage("garbage", Left::Closed, |bytes| {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i * 31 % 251) as u8;
        }
    })
    .await;
}

#[tokio::test]
async fn a_truncated_file_is_moved_aside() {
    survives_damage("truncated", Left::Crashed, |bytes| {
        bytes.truncate(bytes.len() / 2)
    })
    .await;
}

/// Flips a byte in every copy of `needle` in the file.
fn flip(bytes: &mut [u8], needle: &[u8]) {
    let hits: Vec<usize> = (0..bytes.len().saturating_sub(needle.len()))
        .filter(|&i| bytes[i..].starts_with(needle))
        .collect();
    assert!(
        !hits.is_empty(),
        "{} not found in the file",
        String::from_utf8_lossy(needle)
    );
    for at in hits {
        bytes[at + 5] ^= 0x55;
    }
}

#[tokio::test]
async fn flipped_bytes_in_old_records_are_moved_aside() {
    // Every copy: copy-on-write leaves older copies of a page in the file,
    // and all must fail their checksums for the damage to be certain.
    survives_damage("flipped-old", Left::Closed, |bytes| {
        flip(bytes, b"MYCO-MARKER-MYCO")
    })
    .await;
}

#[tokio::test]
async fn flipped_bytes_in_the_newest_commit_are_reported_not_rolled_back() {
    // With one-phase commits redb cannot tell this from a commit torn by a
    // crash and silently falls back to the previous commit, dropping
    // acknowledged writes; two-phase commits make it damage.
    survives_damage("flipped-newest", Left::Crashed, |bytes| {
        flip(bytes, b"MYCO-LATEST-MYCO")
    })
    .await;
}

/// Plants raw records the store would never write.
fn plant(path: &Path, records: &[(&[u8], &[u8])]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(CHANGES).unwrap();
        for (key, value) in records {
            table.insert(*key, *value).unwrap();
        }
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn undecodable_records_are_skipped_and_counted() {
    let path = store_path("undecodable");
    let (store, _) = open(&path);
    store
        .persist(vec![
            put(Table::KV, "good", 1, "v"),
            tombstone(Table::JOBS, "gone", 2),
        ])
        .await
        .unwrap();
    store.close().await;
    plant(
        &path,
        &[
            (b"\x01short", b"\x01\x00\x00"),
            (b"\x01\xff\xfe not utf-8", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
        ],
    );

    let (store, loaded) = open(&path);
    assert_eq!(
        loaded.recovered,
        Some(Recovery::SkippedRecords { count: 2 })
    );
    assert_eq!(loaded.changes.len(), 2);
    // A new version of the damaged key replaces the record.
    store
        .persist(vec![put(Table::KV, "short", 1, "fixed")])
        .await
        .unwrap();
    store.close().await;
    let (store, loaded) = open(&path);
    assert_eq!(
        loaded.recovered,
        Some(Recovery::SkippedRecords { count: 1 })
    );
    assert!(
        loaded
            .changes
            .contains(&put(Table::KV, "short", 1, "fixed"))
    );
    store.close().await;
}

#[tokio::test]
async fn a_newer_record_format_is_refused_not_dropped() {
    let path = store_path("newer-format");
    let (store, _) = open(&path);
    store
        .persist(vec![put(Table::KV, "k", 1, "v")])
        .await
        .unwrap();
    store.close().await;
    plant(&path, &[(b"\x01from-the-future", b"\x09whatever")]);

    let err = Store::open(&path).expect_err("refused");
    assert!(
        matches!(err, StoreError::UnsupportedFormat { version: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("run a newer myco"), "{err}");
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "nothing moved"
    );
}

const CRASH_PATH: &str = "MYCO_STORE_CRASH_PATH";
const CRASH_ROUND: &str = "MYCO_STORE_CRASH_ROUND";
const CRASH_WRITERS: u64 = 16;
const CRASH_KEYS_PER_WRITER: u64 = 32;

/// Not a test on its own: the child process of `acknowledged_writes_survive_sigkill`.
/// Writes forever from several tasks, overwriting a few keys with ever
/// newer versions, and prints `ack <key> <wall_ms>` after each `persist`.
#[test]
#[ignore = "helper process for acknowledged_writes_survive_sigkill"]
fn crash_helper_writes_until_killed() {
    let Ok(path) = std::env::var(CRASH_PATH) else {
        return;
    };
    let round: u64 = std::env::var(CRASH_ROUND).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let (store, _) = Store::open(Path::new(&path)).unwrap();
        let store = Arc::new(store);
        let deadline = Instant::now() + Duration::from_secs(60);
        let tasks: Vec<_> = (0..CRASH_WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let key = format!("w{w}-k{}", i % CRASH_KEYS_PER_WRITER);
                        let wall = round * 1_000_000 + i + 1;
                        store
                            .persist(vec![put(Table::KV, &key, wall, &wall.to_string())])
                            .await
                            .unwrap();
                        println!("ack {key} {wall}");
                        i += 1;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let path = store_path("crash");
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    // Several rounds, each killed at a different point, each reopening the
    // file the previous kill left behind.
    for (round, kill_after) in [(1u64, 300usize), (2, 1500), (3, 4000)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_helper_writes_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_PATH, &path)
            .env(CRASH_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let record = |line: &str, acked: &mut BTreeMap<String, u64>| {
            let mut words = line.split(' ');
            if words.next() != Some("ack") {
                return false;
            }
            let (Some(key), Some(wall)) = (words.next(), words.next().and_then(|w| w.parse().ok()))
            else {
                return false; // a line cut by the kill was never complete
            };
            let newest = acked.entry(key.to_owned()).or_default();
            *newest = (*newest).max(wall);
            true
        };
        let mut seen = 0;
        while seen < kill_after {
            let line = lines
                .next()
                .expect("the helper stopped before it was killed")
                .unwrap();
            seen += usize::from(record(&line, &mut acked));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines printed before the kill were acknowledged too.
        for line in lines.map_while(Result::ok) {
            record(&line, &mut acked);
        }

        let stored = reopen(&path).await;
        for (key, wall) in &acked {
            let change = stored
                .get(&(Table::KV, key.clone()))
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} lost"));
            assert!(
                change.ts.wall_ms >= *wall,
                "round {round}: {key} went back from {wall} to {}",
                change.ts.wall_ms
            );
            assert_eq!(
                change.value.as_deref(),
                Some(change.ts.wall_ms.to_string().as_bytes()),
                "{key}"
            );
        }
    }
    assert_eq!(acked.len() as u64, CRASH_WRITERS * CRASH_KEYS_PER_WRITER);
}

/// Prints acknowledged writes/s for 64 concurrent writers of small values,
/// and the bytes written per acknowledged write.
/// `cargo test --release -p myco-agent --test store -- --ignored --exact throughput --nocapture`
#[test]
#[ignore = "measurement, prints figures"]
fn throughput() {
    const WRITERS: u64 = 64;
    const PER_WRITER: u64 = 500;
    let path = store_path("throughput");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (store, _) = open(&path);
        let store = Arc::new(store);
        let io_before = process_write_bytes();
        let size_before = std::fs::metadata(&path).unwrap().len();
        let started = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        let key = format!("jobs/writer-{w}/{i}");
                        store
                            .persist(vec![put(
                                Table::KV,
                                &key,
                                i + 1,
                                "small value, 32 bytes long....",
                            )])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        let writes = WRITERS * PER_WRITER;
        let stats = store.stats();
        let grown = std::fs::metadata(&path).unwrap().len() - size_before;
        println!("writes            {writes} from {WRITERS} writers in {elapsed:.2?}");
        println!(
            "acknowledged/s    {:.0}",
            writes as f64 / elapsed.as_secs_f64()
        );
        println!(
            "transactions      {} ({:.1} writes each)",
            stats.transactions,
            writes as f64 / stats.transactions as f64
        );
        println!(
            "payload bytes     {:.0} per write",
            stats.bytes_written as f64 / writes as f64
        );
        println!(
            "file growth       {:.0} bytes per write ({grown} total)",
            grown as f64 / writes as f64
        );
        if let (Some(before), Some(after)) = (io_before, process_write_bytes()) {
            println!(
                "disk writes       {:.0} bytes per write (/proc/self/io)",
                (after - before) as f64 / writes as f64
            );
        }
    });
}

fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))?
        .trim()
        .parse()
        .ok()
}
