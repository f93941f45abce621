//! A one-node agent for the jobs runtime tests: a real mesh loop, store,
//! spore store and runtime on a data dir, spores packed and signed here,
//! jobs written as `JobRecord`s to `Table::JOBS`. Every process a test
//! started is killed when its agent is dropped, even if the test fails.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_agent::exec::CgroupConfig;
use myco_agent::exec::record::{self, Liveness};
use myco_agent::jobs::JobsConfig;
use myco_agent::jobs::runtime::{self, JobsRuntime, RuntimeParts};
use myco_agent::mesh::{Clock, MeshHandle, MeshLoop, MeshParts};
use myco_agent::net::streams::{StreamConfig, Streams};
use myco_agent::spores::{SporeStore, Spores};
use myco_agent::store::Store;
use myco_core::{Node, NodeSetup};
use myco_proto::frame::Peer;
use myco_proto::instance::InstanceRecord;
use myco_proto::job::{JobRecord, JobSpec};
use myco_proto::{Capacity, ClusterKey, KeyRing, NodeId, NodeManifest, Table};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::UdpSocket;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A data dir of its own per test, kept between two agents of one test.
pub fn data_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("jobs-{test}"));
    kill_instances(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Kills every live instance recorded under `dir`.
pub fn kill_instances(dir: &Path) {
    for f in record::scan(dir) {
        if let (Ok(r), Liveness::Alive) = (&f.record, f.liveness) {
            let _ = killpg(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
        }
    }
}

/// One agent: mesh loop, spores, jobs runtime.
pub struct Agent {
    pub dir: PathBuf,
    pub mesh: MeshHandle,
    pub spores: Arc<Spores>,
    /// Remote log reading, as the mesh loop routes it.
    pub logs: Arc<myco_agent::logs::RemoteLogs>,
    pub runtime: Option<JobsRuntime>,
    pub key: myco_spore::SigningKey,
    pub ports: std::ops::RangeInclusive<u16>,
    /// The settle period the runtime is started with.
    pub settle: Duration,
    /// Cgroups for instances (off unless a test turns them on).
    pub cgroups: CgroupConfig,
    loop_task: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(rt) = &self.runtime {
            rt.stop();
        }
        self.loop_task.abort();
        kill_instances(&self.dir);
    }
}

/// Starts an agent on `dir`, instances on ports of `ports`.
pub async fn agent(dir: &Path, ports: std::ops::RangeInclusive<u16>) -> Agent {
    // A previous agent of the test may still be letting go of the store.
    let until = Instant::now() + DEADLINE;
    let (store, loaded) = loop {
        match Store::open(&dir.join("state.redb")) {
            Ok(s) => break s,
            Err(e) if Instant::now() < until => {
                eprintln!("store not yet free: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("store: {e}"),
        }
    };
    let store = Arc::new(store);
    let id = NodeId::from_u64(1);
    let key = ClusterKey::from_bytes([3; 32]);
    let mut attempt = 0;
    let (socket, addr, streams, incoming) = loop {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = socket.local_addr().unwrap();
        match Streams::bind(
            addr,
            std::slice::from_ref(&key),
            id,
            StreamConfig::default(),
        )
        .await
        {
            Ok((s, i)) => break (socket, addr, s, i),
            Err(e) if attempt < 20 => {
                attempt += 1;
                eprintln!("port {addr} taken for streams ({e}); trying another");
            }
            Err(e) => panic!("no free port pair: {e}"),
        }
    };
    let spore_store = SporeStore::open(dir, streams.clone(), addr).await.unwrap();
    let keys = KeyRing::new(key);
    let manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id,
        boot: 1,
        name: "n1".into(),
        tags: Default::default(),
        capacity: Capacity {
            cpu_milli: 100_000,
            memory_mb: 65_536,
        },
        mesh_addr: addr,
        api_addr: None,
        edge_addr: None,
        version: myco_proto::MYCO_VERSION.into(),
        key_id: keys.primary_id().to_string(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    let clock = Clock::start();
    let peer = Peer {
        id,
        addr,
        boot: 1,
        bump: 0,
    };
    let mut node = Node::new(
        clock.now(),
        NodeSetup {
            peer,
            manifest,
            keys,
            seed: 7,
            config: Default::default(),
        },
    );
    node.restore(loaded.changes);
    let remote_logs = myco_agent::logs::RemoteLogs::start(
        streams.clone(),
        addr,
        dir.to_path_buf(),
        myco_agent::http::logs::Followers::default(),
    );
    let (mesh_loop, mesh) = MeshLoop::new(MeshParts {
        node,
        socket,
        clock,
        streams,
        incoming,
        store,
        spores: spore_store.clone(),
        logs: remote_logs.clone(),
        apps: Default::default(),
    });
    let loop_task = tokio::spawn(mesh_loop.run());
    let spores = Arc::new(Spores::new(
        spore_store,
        mesh.clone(),
        Duration::from_secs(3600),
    ));
    let signing = myco_spore::SigningKey::from_bytes(&[7u8; 32]);
    spores
        .trust_add(
            &hex::encode(signing.verifying_key().as_bytes()),
            "test".into(),
        )
        .await
        .unwrap();
    let mut agent = Agent {
        dir: dir.to_path_buf(),
        mesh,
        spores,
        logs: remote_logs,
        runtime: None,
        key: signing,
        ports,
        settle: Duration::from_millis(200),
        // Cgroups are covered by the exec tests and one test here; off by
        // default, so a failed test leaves no cgroup behind.
        cgroups: CgroupConfig {
            enabled: false,
            ..CgroupConfig::default()
        },
        loop_task,
    };
    agent.start_runtime().await;
    agent
}

impl Agent {
    /// Starts (again) the jobs runtime on this agent's data dir.
    pub async fn start_runtime(&mut self) {
        let config = JobsConfig {
            ports: self.ports.clone(),
            cgroups: self.cgroups.clone(),
            settle: self.settle,
            ..JobsConfig::default()
        };
        self.runtime = Some(
            runtime::start(RuntimeParts {
                mesh: self.mesh.clone(),
                spores: self.spores.clone(),
                data_dir: self.dir.clone(),
                config,
            })
            .await,
        );
    }

    /// Stops the runtime (instances run on) and waits for its task.
    pub async fn stop_runtime(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.stop();
            rt.join().await;
        }
    }

    pub fn shared(&self) -> &myco_agent::jobs::JobsShared {
        &self.runtime.as_ref().expect("runtime running").shared
    }

    /// Packs `script` as `run.sh` into a spore, puts it in the store, and
    /// returns its digest.
    pub async fn spore(&self, name: &str, script: &str) -> String {
        let src = self.dir.join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        let run = src.join("run.sh");
        std::fs::write(&run, script).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = self.dir.join(format!("{name}.spore"));
        let meta = myco_spore::PackMeta {
            name: name.into(),
            version: "1".into(),
            command: "run.sh".into(),
            created_at: 1,
            ..Default::default()
        };
        let info = myco_spore::pack(
            &src,
            meta,
            &self.key,
            &mut std::fs::File::create(&out).unwrap(),
        )
        .unwrap();
        self.spores
            .store()
            .ingest(out, vec![self.key.verifying_key()])
            .await
            .unwrap();
        info.digest
    }

    /// Writes a job (version 1, or the given record) to `Table::JOBS`.
    pub async fn deploy(&self, toml: &str, digest: &str) -> JobRecord {
        let spec = JobSpec::from_toml(toml).unwrap();
        let record = JobRecord::first(spec, digest, 1).unwrap();
        self.put_job(&record).await;
        record
    }

    pub async fn put_job(&self, record: &JobRecord) {
        self.mesh
            .write(Table::JOBS, record.name(), Some(record.encode()))
            .await
            .unwrap();
    }

    /// The job's instance records.
    pub fn instances(&self, job: &str) -> Vec<InstanceRecord> {
        self.mesh
            .scan(Table::INSTANCES, &format!("{job}/"), 10_000)
            .into_iter()
            .filter_map(|(_, e)| e.value.and_then(|v| InstanceRecord::decode(&v).ok()))
            .collect()
    }
}

/// Waits until `f` gives `Some`, up to [`DEADLINE`]; panics with `what`.
pub async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /` on `addr`: the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// [`wait_for`] with an async condition.
pub async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    mut f: impl FnMut() -> F,
) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
