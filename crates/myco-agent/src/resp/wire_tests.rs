//! The Redis protocol byte for byte, against one embedded node: the
//! replies compared with what redis-server 7.0 sends for the same
//! requests (the real-client tests are `crates/myco/tests/resp_python.rs`
//! and `cache.rs`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::embed::Myco;

/// One node serving the Redis protocol on a free loopback port.
struct Node {
    node: Myco,
    resp: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Node {
    async fn start(tag: &str) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "myco-resp-wire-{tag}-{}-{}",
            std::process::id(),
            crate::cache::wall_ms()
        ));
        let resp = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let key =
            myco_proto::ClusterKey::from_bytes(*b"resp-wire-test-cluster-key-32byt").to_base64();
        let node = Myco::builder()
            .data_dir(&dir)
            .name(tag)
            .mesh_addr("127.0.0.1:0".parse().unwrap())
            .cluster_key(key)
            .resp_addr(resp)
            .start()
            .await
            .expect("an embedded node starts");
        Node { node, resp, dir }
    }

    async fn conn(&self) -> Conn {
        for _ in 0..100 {
            if let Ok(s) = TcpStream::connect(self.resp).await {
                return Conn(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis protocol port never opened");
    }

    async fn stop(self) {
        self.node.stop().await;
        let _ = std::fs::remove_dir_all(self.dir);
    }
}

/// A connection that sends requests and reads exactly the replies wanted.
struct Conn(TcpStream);

impl Conn {
    /// Reads `n` bytes (fewer if the server closes first).
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        let mut at = 0;
        while at < n {
            match tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut got[at..])).await {
                Ok(Ok(0)) => break,
                Ok(Ok(k)) => at += k,
                Ok(Err(e)) => panic!("read failed after {at} bytes: {e}"),
                Err(_) => panic!(
                    "no more replies after {:?}",
                    String::from_utf8_lossy(&got[..at])
                ),
            }
        }
        got.truncate(at);
        got
    }

    /// Reads until what was read ends with `end`.
    async fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !got.ends_with(end) {
            let byte = self.read(1).await;
            assert!(!byte.is_empty(), "closed after {got:?}");
            got.extend(byte);
        }
        got
    }

    /// Sends `request`; asserts the replies are exactly `want`.
    async fn expect(&mut self, request: &[u8], want: &[u8]) {
        self.0.write_all(request).await.unwrap();
        let got = self.read(want.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "for {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Asserts the server has nothing more to say and closed.
    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.0.read_to_end(&mut rest));
        assert!(read.await.is_ok_and(|r| r.is_ok()), "not closed");
        assert_eq!(String::from_utf8_lossy(&rest), "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_take_quotes() {
    let n = Node::start("inline").await;
    let mut c = n.conn().await;
    c.expect(
        b"SET inl \"hello world\"\r\nGET inl\r\nSET inl 'it\\'s'\r\nGET inl\r\n",
        b"+OK\r\n$11\r\nhello world\r\n+OK\r\n$4\r\nit's\r\n",
    )
    .await;
    c.expect(
        b"SET inl \"ab\"c\r\n",
        b"-ERR Protocol error: unbalanced quotes in request\r\n",
    )
    .await;
    c.expect_closed().await;
    n.stop().await;
}

/// A client still sending a value over the limit when the error comes
/// read it, rather than a reset connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_limit_gets_an_error_before_the_close() {
    let n = Node::start("limit").await;
    let mut c = n.conn().await;
    let len = super::parse::MAX_BULK + 2 * 1024 * 1024;
    let mut request = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${len}\r\n").into_bytes();
    request.resize(request.len() + len, b'x');
    request.extend_from_slice(b"\r\n");
    c.expect(
        &request,
        format!(
            "-ERR Protocol error: bulk length over the limit of {} bytes\r\n",
            super::parse::MAX_BULK
        )
        .as_bytes(),
    )
    .await;
    c.expect_closed().await;
    n.stop().await;
}

/// With nothing subscribed, UNSUBSCRIBE still answers (a client waits
/// for it): a null topic, as Redis sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_with_no_subscription_is_confirmed() {
    let n = Node::start("unsub").await;
    let mut c = n.conn().await;
    c.expect(
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    )
    .await;
    c.expect(
        b"PUNSUBSCRIBE\r\n",
        b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n",
    )
    .await;
    c.expect(
        b"UNSUBSCRIBE a b\r\nPING\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n+PONG\r\n",
    )
    .await;
    c.expect(
        b"SUBSCRIBE s\r\nUNSUBSCRIBE\r\nUNSUBSCRIBE\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\ns\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\ns\r\n:0\r\n\
          *3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    )
    .await;
    // RESP3: a push, with RESP3's null.
    c.0.write_all(b"HELLO 3\r\n").await.unwrap();
    c.read_until(b"modules\r\n*0\r\n").await;
    c.expect(
        b"UNSUBSCRIBE\r\n",
        b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
    )
    .await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_read_as_redis_writes_them() {
    let n = Node::start("errors").await;
    let mut c = n.conn().await;
    c.expect(
        b"FOOBAR a b\r\n",
        b"-ERR unknown command 'FOOBAR', with args beginning with: 'a' 'b' \r\n",
    )
    .await;
    c.expect(
        b"get\r\nEXPIRE k\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n\
          -ERR wrong number of arguments for 'expire' command\r\n",
    )
    .await;
    c.expect(
        b"SUBSCRIBE s\r\nGET k\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\ns\r\n:1\r\n\
          -ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
    )
    .await;
    n.stop().await;
}

/// `CLIENT ID` is the connection's number (as `HELLO` reports it);
/// `COMMAND` answers, with nothing, clients that probe it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_and_command_answer() {
    let n = Node::start("client").await;
    let mut c = n.conn().await;
    c.0.write_all(b"CLIENT ID\r\n").await.unwrap();
    let id = c.read_until(b"\r\n").await;
    assert!(id.starts_with(b":"), "{id:?}");
    c.0.write_all(b"HELLO 2\r\n").await.unwrap();
    let hello = c.read_until(b"modules\r\n*0\r\n").await;
    let id = format!("$2\r\nid\r\n{}", String::from_utf8_lossy(&id));
    assert!(
        hello.windows(id.len()).any(|w| w == id.as_bytes()),
        "{id:?} not in {:?}",
        String::from_utf8_lossy(&hello)
    );
    let mut other = n.conn().await;
    other.0.write_all(b"CLIENT ID\r\n").await.unwrap();
    let other_id = other.read_until(b"\r\n").await;
    assert!(!id.ends_with(&String::from_utf8_lossy(&other_id).into_owned()));
    c.expect(
        b"COMMAND\r\nCOMMAND DOCS\r\nCOMMAND INFO get\r\n",
        b"*0\r\n*0\r\n*1\r\n$-1\r\n",
    )
    .await;
    c.expect(
        b"COMMAND COUNT\r\n",
        format!(":{}\r\n", super::table::COMMANDS.len()).as_bytes(),
    )
    .await;
    c.expect(
        b"CLIENT SETINFO LIB-NAME x\r\nRESET\r\n",
        b"+OK\r\n+RESET\r\n",
    )
    .await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_and_expire_take_redis_options() {
    let n = Node::start("set").await;
    let mut c = n.conn().await;
    c.expect(b"SET k v EX 10 PX 100\r\n", b"-ERR syntax error\r\n")
        .await;
    for bad in ["EX 0", "EX -1", "EX 99999999999999999"] {
        c.expect(
            format!("SET k v {bad}\r\n").as_bytes(),
            b"-ERR invalid expire time in 'set' command\r\n",
        )
        .await;
    }
    c.expect(
        b"EXPIRE k 99999999999999999\r\n",
        b"-ERR invalid expire time in 'expire' command\r\n",
    )
    .await;
    // GET: the old value (or nil), with NX and XX too (Redis 7).
    c.expect(
        b"SET g v GET\r\nSET g w GET\r\nSET g x NX GET\r\nGET g\r\nSET g2 y XX GET\r\nEXISTS g2\r\n",
        b"$-1\r\n$1\r\nv\r\n$1\r\nw\r\n$1\r\nw\r\n$-1\r\n:0\r\n",
    )
    .await;
    c.expect(
        b"SET t v EX 100\r\nSET t w KEEPTTL\r\nTTL t\r\nGET t\r\nSET t z\r\nTTL t\r\n",
        b"+OK\r\n+OK\r\n:100\r\n$1\r\nw\r\n+OK\r\n:-1\r\n",
    )
    .await;
    // EXPIRE's conditions, in the order Redis' own test takes them.
    c.expect(
        b"SET e v\r\nEXPIRE e 10 XX\r\nEXPIRE e 10 GT\r\nEXPIRE e 10 LT\r\nEXPIRE e 10 NX\r\n\
          EXPIRE e 20 NX\r\nEXPIRE e 20 GT\r\nEXPIRE e 5 GT\r\nEXPIRE e 5 LT\r\n\
          EXPIRE e 50 LT\r\nEXPIRE e 5 XX\r\nEXPIRE nokey 5\r\nEXPIRE e 0 GT\r\nEXISTS e\r\n\
          PEXPIRE e -1 LT\r\nEXISTS e\r\n",
        b"+OK\r\n:0\r\n:0\r\n:1\r\n:0\r\n:0\r\n:1\r\n:0\r\n:1\r\n:0\r\n:1\r\n:0\r\n:0\r\n:1\r\n:1\r\n:0\r\n",
    )
    .await;
    c.expect(
        b"EXPIRE e 10 NX XX\r\nEXPIRE e 10 FOO\r\n",
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n\
          -ERR Unsupported option FOO\r\n",
    )
    .await;
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_queues_and_exec_runs_in_order() {
    let n = Node::start("multi").await;
    let mut c = n.conn().await;
    c.expect(
        b"MULTI\r\nSET a 1\r\nGET a\r\nINCR a\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n$1\r\n1\r\n:2\r\n",
    )
    .await;
    // A command that fails as it runs does not stop the others.
    c.expect(
        b"MULTI\r\nSET a x\r\nINCR a\r\nGET a\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n\
          -ERR value is not an integer or out of range\r\n$1\r\nx\r\n",
    )
    .await;
    // One refused as it is queued aborts them all.
    c.expect(
        b"MULTI\r\nGET\r\nSET a 2\r\nEXEC\r\nGET a\r\n",
        b"+OK\r\n-ERR wrong number of arguments for 'get' command\r\n+QUEUED\r\n\
          -EXECABORT Transaction discarded because of previous errors.\r\n$1\r\nx\r\n",
    )
    .await;
    c.expect(
        b"MULTI\r\nMULTI\r\nEXEC\r\nEXEC\r\nDISCARD\r\n",
        b"+OK\r\n-ERR MULTI calls can not be nested\r\n*0\r\n\
          -ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n",
    )
    .await;
    c.expect(
        b"MULTI\r\nSET a 5\r\nDISCARD\r\nGET a\r\n",
        b"+OK\r\n+QUEUED\r\n+OK\r\n$1\r\nx\r\n",
    )
    .await;
    c.expect(
        b"MULTI\r\nSUBSCRIBE s\r\nEXEC\r\n",
        b"+OK\r\n-ERR SUBSCRIBE inside MULTI is not supported here; subscribe outside a transaction\r\n\
          -EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    c.0.write_all(b"WATCH a\r\n").await.unwrap();
    let e = c.read_until(b"\r\n").await;
    assert!(e.starts_with(b"-ERR WATCH is not supported"), "{e:?}");
    // QUIT inside MULTI runs at once.
    c.expect(b"MULTI\r\nPING\r\nQUIT\r\n", b"+OK\r\n+QUEUED\r\n+OK\r\n")
        .await;
    c.expect_closed().await;
    n.stop().await;
}
