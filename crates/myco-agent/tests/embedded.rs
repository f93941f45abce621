//! Two embedded nodes in one process: the cache and messaging an embedder
//! sees are mesh-wide (a key set on one node is read on the other; a
//! request on one is answered by a handler on the other).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use myco_agent::Myco;
use myco_agent::msg::MsgError;
use myco_proto::ClusterKey;
use myco_proto::cache::BucketConfig;

fn temp_dir(tag: &str) -> PathBuf {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    std::env::temp_dir().join(format!("myco-embedded-{tag}-{}-{n}", std::process::id()))
}

/// Polls `check` until it gives `Some`, for up to `within`.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /metrics` over plain HTTP/1.1 (reads are open on loopback).
async fn get_metrics(api: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of an unlabelled sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn node(base: &std::path::Path, tag: &str, key: &str, join: Option<String>) -> Myco {
    let mut b = Myco::builder()
        .data_dir(base.join(tag))
        .name(tag)
        .mesh_addr("127.0.0.1:0".parse().unwrap())
        .cluster_key(key);
    if let Some(j) = join {
        b = b.join(j);
    }
    b.start().await.expect("an embedded node starts")
}

/// Two nodes in a fresh directory under `tag`, b joined to a, once both
/// see each other.
async fn pair(tag: &str, key: &str) -> (PathBuf, Myco, Myco) {
    let base = temp_dir(tag);
    let a = node(&base, "a", key, None).await;
    let b = node(&base, "b", key, Some(a.mesh_addr().to_string())).await;
    wait_for(
        "both nodes to see each other",
        Duration::from_secs(20),
        || async { (a.live_members() == 2 && b.live_members() == 2).then_some(()) },
    )
    .await;
    (base, a, b)
}

/// Creates bucket `name` through a, once b knows it too.
async fn create_on(a: &Myco, b: &Myco, name: &str, config: BucketConfig) {
    a.cache().create_bucket(name, config).await.unwrap();
    wait_for("b to know the bucket", Duration::from_secs(10), || async {
        b.cache().service().bucket(name)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_nodes_share_cache_and_messaging() {
    let key = ClusterKey::from_bytes(*b"embedded-test-cluster-key-32byte").to_base64();
    let (base, a, b) = pair("two", &key).await;
    assert_ne!(a.mesh_addr().port(), 0, "port 0 resolves to the bound port");

    // The default bucket: set on a, read on b.
    a.cache()
        .set("default", "greeting", b"hello".to_vec(), None)
        .await
        .expect("set on a");
    assert_eq!(
        b.cache()
            .get("default", "greeting")
            .await
            .expect("get on b"),
        Some(b"hello".to_vec())
    );
    assert!(b.cache().delete("default", "greeting").await.unwrap());
    assert_eq!(a.cache().get("default", "greeting").await.unwrap(), None);

    // A named bucket is replicated state: b knows it once it arrives.
    let config = BucketConfig {
        ttl_ms: 0,
        max_entries: 100,
        replicas: 2,
    };
    create_on(&a, &b, "sessions", config).await;
    b.cache()
        .set("sessions", "s1", b"alice".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        a.cache().get("sessions", "s1").await.unwrap(),
        Some(b"alice".to_vec())
    );
    assert!(
        a.cache()
            .set_ttl("sessions", "s1", Duration::from_millis(200))
            .await
            .unwrap()
    );
    wait_for("the entry to expire", Duration::from_secs(5), || async {
        b.cache()
            .get("sessions", "s1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // Request/reply across the nodes: a answers, b asks.
    let orders_a = a.app("orders");
    let orders_b = b.app("orders");
    let none = orders_b
        .request("price", b"x".to_vec(), Duration::from_millis(300))
        .await;
    assert_eq!(none, Err(MsgError::NoSubscriber("orders.price".into())));
    let _l = orders_a
        .on_request("price", |d| async move {
            let mut out = b"price of ".to_vec();
            out.extend_from_slice(&d.body);
            out
        })
        .unwrap();
    let answer = wait_for("b to learn a's subscriber", Duration::from_secs(10), || {
        let orders_b = orders_b.clone();
        async move {
            match orders_b
                .request("price", b"apple".to_vec(), Duration::from_secs(2))
                .await
            {
                Ok(a) => Some(a),
                Err(MsgError::NoSubscriber(_)) => None,
                Err(e) => panic!("request failed: {e}"),
            }
        }
    })
    .await;
    assert_eq!(answer, b"price of apple".to_vec());

    // send: to one node's subscribers only.
    let mut on_a = orders_a.subscribe("created").unwrap();
    let mut on_b = orders_b.subscribe("created").unwrap();
    orders_b
        .send(a.node_id(), "created", b"42".to_vec())
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), on_a.recv())
        .await
        .expect("a gets what b sent it")
        .unwrap();
    assert_eq!(&*got.body, b"42");
    orders_a.broadcast("created", b"43".to_vec()).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
        .await
        .expect("b gets the broadcast")
        .unwrap();
    assert_eq!(&*got.body, b"43", "b never saw the message sent to a alone");

    // The same services' counters on the HTTP API's /metrics.
    let metrics = get_metrics(b.api_addr()).await;
    for (name, at_least) in [
        ("myco_cache_hits_total", 1.0),
        ("myco_cache_misses_total", 1.0),
        ("myco_cache_forwards_total", 1.0),
        ("myco_msg_requests_total", 2.0),
        ("myco_msg_requests_unanswerable_total", 1.0),
        ("myco_msg_published_total", 1.0),
    ] {
        let v = sample(&metrics, name).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        assert!(v >= at_least, "{name} = {v}, want >= {at_least}");
    }
    assert!(
        metrics.contains("myco_cache_evictions_total{reason=\"budget\"}"),
        "{metrics}"
    );

    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(base);
}

/// A copy older than another owner's is repaired by reads: one owner is
/// given a newer version behind the other's back (as a write that reached
/// only it would), and reads through the stale owner bring it the newer
/// version, whichever of the two ranks first for the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_repair_a_stale_replica() {
    let key = ClusterKey::from_bytes(*b"embedded-test-cluster-key-32byt2").to_base64();
    let (base, a, b) = pair("repair", &key).await;
    // Two copies on two nodes: both own every key.
    let config = BucketConfig {
        ttl_ms: 0,
        max_entries: 100,
        replicas: 2,
    };
    create_on(&a, &b, "r", config).await;
    for k in ["k1", "k2"] {
        a.cache().set("r", k, b"old".to_vec(), None).await.unwrap();
        b.cache().service().set_local_only("r", k, b"new".to_vec());
        let held = |n: &Myco| {
            n.cache()
                .service()
                .local_entry("r", k)
                .and_then(|e| e.value)
        };
        assert_eq!(
            held(&a),
            Some(b"old".to_vec()),
            "a is stale before the reads"
        );
        wait_for(
            "reads to repair a's stale copy",
            Duration::from_secs(10),
            || async {
                a.cache().get("r", k).await.unwrap();
                (held(&a) == Some(b"new".to_vec())).then_some(())
            },
        )
        .await;
        assert_eq!(a.cache().get("r", k).await.unwrap(), Some(b"new".to_vec()));
    }
    // Whichever node found the stale copy repaired it and counted it: the
    // asker (it checks the owners it did not ask) or, when the read went
    // to the other owner first, that owner.
    let repairs = |n: &Myco| {
        n.cache()
            .service()
            .counters()
            .read_repairs
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(repairs(&a) + repairs(&b) >= 2);
    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(base);
}

/// Increments from both nodes at once add up: each is made on the key's
/// primary, so every caller sees a different sum and none is lost (with
/// last-writer-wins on a read-then-write, concurrent ones would be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_every_node_add_up() {
    let key = ClusterKey::from_bytes(*b"embedded-test-cluster-key-32byte").to_base64();
    let (base, a, b) = pair("incr", &key).await;
    // One of the two is the key's primary: the other's increments go
    // over the mesh, so both paths run against each other.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let cache = if i % 2 == 0 { a.cache() } else { b.cache() };
        tasks.spawn(async move { cache.incr("default", "hits", 1).await });
    }
    let mut sums = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sums.push(r.unwrap().expect("an increment"));
    }
    sums.sort_unstable();
    assert_eq!(
        sums,
        (1..=100).collect::<Vec<i64>>(),
        "each saw its own sum"
    );
    for n in [&a, &b] {
        assert_eq!(
            n.cache().get("default", "hits").await.unwrap(),
            Some(b"100".to_vec())
        );
    }
    assert_eq!(b.cache().incr("default", "hits", -101).await.unwrap(), -1);

    // What is not a counter is refused, and left as it was.
    use myco_agent::cache::CacheError;
    use myco_proto::cache::CounterError;
    a.cache()
        .set("default", "name", b"alice".to_vec(), None)
        .await
        .unwrap();
    for n in [&a, &b] {
        let r = n.cache().incr("default", "name", 1).await;
        assert!(
            matches!(r, Err(CacheError::Counter(CounterError::NotInteger))),
            "{r:?}"
        );
    }
    assert_eq!(
        b.cache().get("default", "name").await.unwrap(),
        Some(b"alice".to_vec())
    );
    a.cache()
        .set("default", "big", i64::MAX.to_string().into_bytes(), None)
        .await
        .unwrap();
    let r = b.cache().incr("default", "big", 1).await;
    assert!(
        matches!(r, Err(CacheError::Counter(CounterError::Overflow))),
        "{r:?}"
    );
    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(base);
}

/// A counter on its way to a new primary (held only by the member past
/// its owners, as after a join, before the move) counts on from there:
/// the primary holds nothing, so the asker looks as a read does and the
/// primary adds to what it found, instead of starting again from 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_during_a_move_counts_on_from_the_old_owner() {
    let key = ClusterKey::from_bytes(*b"embedded-test-cluster-key-32byt3").to_base64();
    let (base, a, b) = pair("incr-move", &key).await;
    // One copy: one node owns each key, the other is the member past it.
    let config = BucketConfig {
        ttl_ms: 0,
        max_entries: 100,
        replicas: 1,
    };
    create_on(&a, &b, "solo", config).await;
    // b holds every key, whichever owns it: about half are a's, held
    // only by b as an old owner would hold them.
    let keys: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    for k in &keys {
        b.cache()
            .service()
            .set_local_only("solo", k, b"41".to_vec());
    }
    for (i, k) in keys.iter().enumerate() {
        let asker = if i % 2 == 0 { &a } else { &b };
        assert_eq!(asker.cache().incr("solo", k, 1).await.unwrap(), 42, "{k}");
    }
    let fallbacks = |n: &Myco| {
        n.cache()
            .service()
            .counters()
            .fallback_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(
        fallbacks(&a) + fallbacks(&b) > 0,
        "no key was a's: the move was not exercised"
    );
    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(base);
}
