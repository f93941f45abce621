//! Embedding a node in a Rust program: what Mycorrizal was for.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let node = myco_agent::Myco::builder()
//!     .data_dir("/tmp/node-a")
//!     .mesh_addr("127.0.0.1:7946".parse()?)
//!     .join("127.0.0.1:7947")
//!     .cluster_key(std::fs::read_to_string("cluster.key")?)
//!     .start()
//!     .await?;
//! node.cache().set("default", "k", b"v".to_vec(), None).await?;
//! let orders = node.app("orders");
//! orders.broadcast("created", b"42".to_vec())?;
//! node.stop().await;
//! # Ok(()) }
//! ```
//!
//! An embedded node is a whole agent (membership, replicated state, the
//! HTTP API on loopback, jobs), started by [`crate::run::start`] like the
//! binary's; [`Cache`] and [`App`] call the same cache and messaging
//! services the HTTP API and the Redis protocol call, so a key set here is
//! the key `GET /v1/cache/{bucket}/{key}` and `redis-cli GET` see.

mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use myco_proto::NodeId;
use myco_proto::cache::BucketConfig;
use tokio::task::AbortHandle;

use crate::cache::CacheError;
use crate::running::Running;
use crate::settings::AgentOptions;

pub use app::{App, Listener};

/// File in the data dir that holds a key given to [`Builder::cluster_key`].
pub const EMBEDDED_KEY_FILE: &str = "embedded-cluster.key";

/// Options of an embedded node; [`Builder::start`] starts it.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    opts: AgentOptions,
    cluster_key: Option<String>,
}

impl Builder {
    /// Where the node keeps its identity, keys and replicated state
    /// (cache entries and messages are never written to disk).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.opts.data_dir = Some(dir.into());
        self
    }

    /// The mesh address (UDP, and TCP on the same port for streams),
    /// bound and advertised; port 0 takes a free one
    /// ([`Myco::mesh_addr`] tells which). Default `127.0.0.1:0`.
    pub fn mesh_addr(mut self, addr: SocketAddr) -> Self {
        self.opts.bind = Some(addr.to_string());
        self.opts.advertise = Some(addr.to_string());
        self
    }

    /// A node to join (`HOST:PORT`); may be given more than once.
    pub fn join(mut self, addr: impl Into<String>) -> Self {
        self.opts.join.push(addr.into());
        self
    }

    /// The cluster key ring, as `myco cluster key` prints it; every node
    /// of a mesh needs the same. Without it the data dir's ring is used
    /// (a new key on first start).
    pub fn cluster_key(mut self, key: impl Into<String>) -> Self {
        self.cluster_key = Some(key.into());
        self
    }

    /// The node's name (default: the host name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// The HTTP API's address (default `127.0.0.1:0`, a free port).
    pub fn api_addr(mut self, addr: SocketAddr) -> Self {
        self.opts.api = Some(addr.to_string());
        self
    }

    /// Also serve the Redis protocol on `addr`.
    pub fn resp_addr(mut self, addr: SocketAddr) -> Self {
        self.opts.resp = Some(addr.to_string());
        self
    }

    /// Any other agent option (as the config file names them); the ones
    /// set above win.
    pub fn options(mut self, base: AgentOptions) -> Self {
        self.opts = self.opts.over(base);
        self
    }

    /// Starts the node on the current tokio runtime and joins the mesh.
    pub async fn start(self) -> anyhow::Result<Myco> {
        let mut opts = self.opts;
        let loopback = "127.0.0.1:0".to_string();
        opts.bind.get_or_insert_with(|| loopback.clone());
        opts.api.get_or_insert_with(|| loopback.clone());
        // The edge gateway serves jobs' routes; embedded, it stays on loopback.
        opts.edge.get_or_insert_with(|| loopback.clone());
        let data_dir = opts
            .data_dir
            .clone()
            .context("an embedded node needs a data dir: Myco::builder().data_dir(..)")?;
        if let Some(key) = self.cluster_key {
            crate::datadir::parse_keys(&key, "the embedded cluster key")?;
            let path = data_dir.join(EMBEDDED_KEY_FILE);
            let file = path.clone();
            tokio::task::spawn_blocking(move || write_private(&file, &key))
                .await
                .context("writing the cluster key")?
                .with_context(|| format!("writing the cluster key to {}", path.display()))?;
            opts.cluster_key_file = Some(path);
        }
        let settings = opts.resolve()?;
        let running = crate::run::start(settings).await?;
        Ok(Myco {
            running,
            listeners: Arc::default(),
        })
    }
}

/// Writes `text` to `path`, readable by the owner only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// A running embedded node.
#[derive(Debug)]
pub struct Myco {
    running: Running,
    /// Message and request handlers, ended by [`Myco::stop`].
    listeners: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Myco {
    /// Options for a new node.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.running.node_id()
    }

    /// The bound mesh address, for other nodes' [`Builder::join`].
    pub fn mesh_addr(&self) -> SocketAddr {
        self.running.mesh_addr()
    }

    /// The bound HTTP API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.running.api_addr()
    }

    /// Live members of the mesh, this node included.
    pub fn live_members(&self) -> usize {
        self.running
            .mesh()
            .snapshot()
            .members
            .iter()
            .filter(|m| m.is_self || m.state == myco_core::MemberState::Alive)
            .count()
    }

    /// The mesh-wide cache.
    pub fn cache(&self) -> Cache {
        Cache(self.running.cache().clone())
    }

    /// Messaging for the app `name`: its topics are `{name}.{topic}`
    /// mesh-wide (HTTP and Redis clients reach them by that name).
    pub fn app(&self, name: &str) -> App {
        App::new(
            name,
            self.running.messaging().clone(),
            self.listeners.clone(),
        )
    }

    /// Ends the handlers, hands this node's instances and cache entries
    /// to the other nodes (see the agent's graceful stop), leaves the mesh
    /// and stops the node.
    pub async fn stop(self) {
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            l.abort();
        }
        self.running.stop().await;
    }
}

/// The mesh-wide cache, as seen from an embedded node: any key, whichever
/// node owns it. Semantics as in ARCHITECTURE.md "Cache and messaging".
#[derive(Clone, Debug)]
pub struct Cache(Arc<crate::cache::Cache>);

impl Cache {
    /// A key's live value (`default` is created on first use; other
    /// buckets need [`Cache::create_bucket`]).
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.0.get(bucket, key).await
    }

    /// Stores a value; `ttl` overrides the bucket's (`Some(ZERO)`: never
    /// expires). Returns once the primary and a replica hold it.
    pub async fn set(
        &self,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.0.set(bucket, key, value, ttl_ms).await
    }

    /// Deletes a key; true if it held a live value.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool, CacheError> {
        self.0.delete(bucket, key).await
    }

    /// Gives a live key a new lifetime (`ZERO`: never expires); false if
    /// the key is absent.
    pub async fn set_ttl(
        &self,
        bucket: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.0.expire(bucket, key, ms).await
    }

    /// Adds `by` (negative to subtract) to the decimal integer a key
    /// holds, none counting as 0, and returns the sum: made on the key's
    /// primary, so increments from every node add up (a counter of
    /// requests, a rate limit). Returns once two owners hold it.
    pub async fn incr(&self, bucket: &str, key: &str, by: i64) -> Result<i64, CacheError> {
        self.0.incr(bucket, key, by).await
    }

    /// Creates or changes a bucket (replicated state: every node knows it).
    pub async fn create_bucket(&self, name: &str, config: BucketConfig) -> Result<(), CacheError> {
        self.0.create_bucket(name, config).await
    }

    /// The service itself, for what this facade does not cover.
    pub fn service(&self) -> &Arc<crate::cache::Cache> {
        &self.0
    }
}
