//! Blob (spore chunk) messages are handled where they are read off the
//! stream connection, with no mesh loop running: a request is answered,
//! and a message that does not decode is counted and dropped.

use std::path::Path;
use std::time::{Duration, Instant};

use myco_agent::spores::SporeStore;
use myco_proto::blob::BlobMessage;
use myco_proto::channel::Channel;

mod streams_util;
use streams_util::{WAIT, key, node};

#[tokio::test]
async fn blob_messages_are_handled_on_the_reader_task_and_garbage_is_counted() {
    let (a, mut a_rx) = node(1, &[key(1)]).await;
    // b's inbox is never read: nothing routes what arrives there.
    let (b, _b_inbox) = node(2, &[key(1)]).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("spore-blobs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SporeStore::open(&dir, b.clone(), b.local_addr())
        .await
        .unwrap();

    let digest = format!("sha256:{}", "ab".repeat(32));
    let request = BlobMessage::Request {
        digest: digest.clone(),
        offset: 0,
        len: 1024,
        reply_to: a.local_addr(),
    };
    a.send(b.local_addr(), Channel::Blob, request.encode())
        .unwrap();
    let got = tokio::time::timeout(WAIT, a_rx.recv())
        .await
        .expect("b answered the request without a mesh loop")
        .unwrap();
    assert_eq!(got.channel, Channel::Blob);
    let lacking = BlobMessage::Lacking { digest, offset: 0 };
    assert_eq!(BlobMessage::decode(&got.message), Some(lacking));

    assert_eq!(store.bad_messages(), 0);
    a.send(b.local_addr(), Channel::Blob, vec![0xff; 7])
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while store.bad_messages() == 0 {
        assert!(Instant::now() < deadline, "the bad message was not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.bad_messages(), 1);
}
