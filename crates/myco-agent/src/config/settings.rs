//! Agent settings: raw options (from flags and an optional TOML file, flags
//! winning) resolved into validated [`AgentSettings`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Options as given, before defaults and validation. The TOML config file
/// uses the same names (`data_dir`, `name`, `bind`, `advertise`, `api`,
/// `edge`, `join = [..]`, `cluster_key_file`, `[tags]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOptions {
    /// Where the node keeps its identity, keys and state.
    pub data_dir: Option<PathBuf>,
    /// The node's name.
    pub name: Option<String>,
    /// Mesh transport listen address.
    pub bind: Option<String>,
    /// Address peers should use.
    pub advertise: Option<String>,
    /// HTTP API listen address.
    pub api: Option<String>,
    /// Edge gateway listen address.
    pub edge: Option<String>,
    /// Peers to join.
    #[serde(default)]
    pub join: Vec<String>,
    /// Node tags for placement.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// File holding the cluster key ring.
    pub cluster_key_file: Option<PathBuf>,
    /// Failure-detection timings (config file only).
    #[serde(default)]
    pub membership: MembershipOptions,
    /// `[spores]` in the config file.
    #[serde(default)]
    pub spores: SporeOptions,
    /// `[state]` in the config file.
    #[serde(default)]
    pub state: StateOptions,
    /// Host names (besides loopback and the bound address) the API answers
    /// to: the names operators and dashboards use to reach it.
    #[serde(default)]
    pub api_allowed_hosts: Vec<String>,
    /// Milliseconds between keep-alive comments on a quiet `/v1/events`
    /// stream [15000] (config file only; tests shorten it).
    pub events_keepalive_ms: Option<u64>,
    /// Redis-protocol listen address for the cache; off unless given.
    pub resp: Option<String>,
    /// LAN discovery: `lan` or `lan:PORT`; off unless given.
    pub discover: Option<String>,
    /// The edge sends to instances on other nodes directly in plaintext
    /// instead of through their node's relay over mutual TLS [false]
    /// (trusted LANs only).
    pub edge_direct: Option<bool>,
    /// The edge takes a local instance when it is as good as the
    /// balancer's choice [false].
    pub edge_prefer_local: Option<bool>,
}

/// `[state]` in the config file: tombstone collection. Every node of a
/// mesh should use the same.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateOptions {
    /// Whether deleted keys' tombstones are ever collected [true].
    pub collect_tombstones: Option<bool>,
    /// Seconds a tombstone is kept at least [3600].
    pub tombstone_grace_secs: Option<u64>,
    /// Hours a node may stay unseen before it no longer holds collection
    /// back; if it returns later it refills what lies below the horizon
    /// from its peers and loses writes only it held [24].
    pub reap_after_hours: Option<u64>,
}

impl StateOptions {
    fn apply(&self, c: &mut myco_core::Config) {
        if let Some(v) = self.collect_tombstones {
            c.collect_tombstones = v;
        }
        if let Some(v) = self.tombstone_grace_secs {
            c.tombstone_grace = std::time::Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.reap_after_hours {
            c.reap_after = std::time::Duration::from_secs(3600 * v);
        }
    }
}

/// `[spores]` in the config file.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SporeOptions {
    /// Hours a spore no job references is kept before it is deleted [168].
    pub retention_hours: Option<u64>,
}

/// `[membership]` in the config file: SWIM timings. Every node of a mesh
/// should use the same. Slower values suit lossy Wi-Fi; faster ones detect
/// failures sooner at the cost of more false suspicions.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MembershipOptions {
    /// How often each node probes one member [300].
    pub probe_period_ms: Option<u64>,
    /// How long a probe waits before asking others to probe [150].
    pub probe_rtt_ms: Option<u64>,
    /// How long a suspect may refute before it is declared down [1000].
    pub suspect_ms: Option<u64>,
}

impl MembershipOptions {
    /// The core config with these timings applied.
    pub fn core_config(&self) -> Result<myco_core::Config, SettingsError> {
        let mut c = myco_core::Config::default();
        let ms = std::time::Duration::from_millis;
        if let Some(v) = self.probe_period_ms {
            c.probe_period = ms(v);
        }
        if let Some(v) = self.probe_rtt_ms {
            c.probe_rtt = ms(v);
        }
        if let Some(v) = self.suspect_ms {
            c.suspect_to_down_after = ms(v);
        }
        if c.probe_rtt.is_zero()
            || c.probe_rtt >= c.probe_period
            || c.suspect_to_down_after < c.probe_period
        {
            return Err(SettingsError::Membership);
        }
        Ok(c)
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read or parsed.
    #[error("config file {path}: {why}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An address is not `IP:PORT`.
    #[error("--{flag} {value:?} is not an address (want IP:PORT, e.g. 0.0.0.0:7946)")]
    BadAddr {
        /// Which flag.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// A tag is not `KEY=VALUE`.
    #[error("--tag {0:?} is not KEY=VALUE")]
    BadTag(String),
    /// Membership timings that cannot work together.
    #[error("[membership]: need 0 < probe_rtt_ms < probe_period_ms <= suspect_ms")]
    Membership,
    /// `--discover` names no method this release has.
    #[error("{0}")]
    Discover(String),
}

/// Validated settings the agent runs with.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Data dir.
    pub data_dir: PathBuf,
    /// Node name (defaults to the host name).
    pub name: String,
    /// Mesh listen address.
    pub bind: SocketAddr,
    /// Address peers use; detected when not given.
    pub advertise: SocketAddr,
    /// HTTP API listen address.
    pub api: SocketAddr,
    /// Edge gateway listen address (served by a later release).
    pub edge: SocketAddr,
    /// Join addresses, `HOST:PORT`: every address a name resolves to,
    /// resolved again while the node is alone.
    pub join: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Cluster key file, if given.
    pub cluster_key_file: Option<PathBuf>,
    /// Core tunables, from `[membership]`.
    pub core: myco_core::Config,
    /// How long an unreferenced spore is kept.
    pub spore_retention: std::time::Duration,
    /// Extra host names the API answers to (see [`crate::http::guard`]).
    pub api_allowed_hosts: Vec<String>,
    /// Interval of keep-alive comments on a quiet event stream.
    pub events_keepalive: std::time::Duration,
    /// Redis-protocol listen address, if any.
    pub resp: Option<SocketAddr>,
    /// LAN discovery by sealed multicast beacons, if asked for.
    pub discover: Option<crate::discovery::LanDiscovery>,
    /// The edge reaches remote instances directly, in plaintext.
    pub edge_direct: bool,
    /// The edge prefers local instances when as good.
    pub edge_prefer_local: bool,
}

/// Parses `KEY=VALUE` tags from the command line.
pub fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>, SettingsError> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(SettingsError::BadTag(t.clone())),
        })
        .collect()
}

impl AgentOptions {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<AgentOptions, SettingsError> {
        let err = |why: String| SettingsError::ConfigFile {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// `self` over `base`: options given here win; tags and joins merge.
    pub fn over(self, base: AgentOptions) -> AgentOptions {
        let mut tags = base.tags;
        tags.extend(self.tags);
        let mut join = base.join;
        join.extend(self.join);
        let mut api_allowed_hosts = base.api_allowed_hosts;
        api_allowed_hosts.extend(self.api_allowed_hosts);
        AgentOptions {
            api_allowed_hosts,
            events_keepalive_ms: self.events_keepalive_ms.or(base.events_keepalive_ms),
            resp: self.resp.or(base.resp),
            discover: self.discover.or(base.discover),
            edge_direct: self.edge_direct.or(base.edge_direct),
            edge_prefer_local: self.edge_prefer_local.or(base.edge_prefer_local),
            data_dir: self.data_dir.or(base.data_dir),
            name: self.name.or(base.name),
            bind: self.bind.or(base.bind),
            advertise: self.advertise.or(base.advertise),
            api: self.api.or(base.api),
            edge: self.edge.or(base.edge),
            join,
            tags,
            cluster_key_file: self.cluster_key_file.or(base.cluster_key_file),
            membership: MembershipOptions {
                probe_period_ms: self
                    .membership
                    .probe_period_ms
                    .or(base.membership.probe_period_ms),
                probe_rtt_ms: self
                    .membership
                    .probe_rtt_ms
                    .or(base.membership.probe_rtt_ms),
                suspect_ms: self.membership.suspect_ms.or(base.membership.suspect_ms),
            },
            spores: SporeOptions {
                retention_hours: self.spores.retention_hours.or(base.spores.retention_hours),
            },
            state: StateOptions {
                collect_tombstones: self
                    .state
                    .collect_tombstones
                    .or(base.state.collect_tombstones),
                tombstone_grace_secs: self
                    .state
                    .tombstone_grace_secs
                    .or(base.state.tombstone_grace_secs),
                reap_after_hours: self.state.reap_after_hours.or(base.state.reap_after_hours),
            },
        }
    }

    /// Applies defaults and validates.
    pub fn resolve(self) -> Result<AgentSettings, SettingsError> {
        let addr = |flag: &'static str,
                    v: Option<String>,
                    default: &str|
         -> Result<SocketAddr, SettingsError> {
            let value = v.unwrap_or_else(|| default.to_string());
            value
                .parse()
                .map_err(|_| SettingsError::BadAddr { flag, value })
        };
        let bind = addr("bind", self.bind, "0.0.0.0:7946")?;
        let advertise = match self.advertise {
            Some(v) => addr("advertise", Some(v), "")?,
            None if bind.ip().is_unspecified() => {
                SocketAddr::new(first_non_loopback_ip(), bind.port())
            }
            None => bind,
        };
        Ok(AgentSettings {
            data_dir: self.data_dir.unwrap_or_else(default_data_dir),
            name: self.name.unwrap_or_else(hostname),
            bind,
            advertise,
            api: addr("api", self.api, "127.0.0.1:7070")?,
            edge: addr("edge", self.edge, "0.0.0.0:8080")?,
            join: self.join,
            tags: self.tags,
            cluster_key_file: self.cluster_key_file,
            core: {
                let mut c = self.membership.core_config()?;
                self.state.apply(&mut c);
                c
            },
            spore_retention: std::time::Duration::from_secs(
                3600 * self.spores.retention_hours.unwrap_or(168),
            ),
            api_allowed_hosts: self.api_allowed_hosts,
            events_keepalive: std::time::Duration::from_millis(
                self.events_keepalive_ms.unwrap_or(15_000).max(10),
            ),
            resp: match self.resp {
                Some(v) => Some(addr("resp", Some(v), "")?),
                None => None,
            },
            discover: match self.discover {
                Some(v) => Some(
                    crate::discovery::LanDiscovery::parse(&v).map_err(SettingsError::Discover)?,
                ),
                None => None,
            },
            edge_direct: self.edge_direct.unwrap_or(false),
            edge_prefer_local: self.edge_prefer_local.unwrap_or(false),
        })
    }
}

/// `/var/lib/myco` for root, `~/.local/share/myco` otherwise.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/myco");
    }
    match std::env::var_os("XDG_DATA_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share").into()))
    {
        Some(base) => Path::new(&base).join("myco"),
        None => PathBuf::from("myco-data"),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "myco".into())
}

/// The first IPv4 address of an up, non-loopback interface; loopback if none.
/// Multi-homed machines should pass `--advertise`.
fn first_non_loopback_ip() -> IpAddr {
    nix::ifaddrs::getifaddrs()
        .ok()
        .and_then(|addrs| {
            addrs
                .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
                .filter_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|v4| v4.ip())))
                .find(|ip| !ip.is_loopback())
        })
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_tags_merge() {
        let file: AgentOptions =
            toml::from_str("name = \"file\"\nbind = \"127.0.0.1:1\"\njoin = [\"a:1\"]\n[tags]\nzone = \"a\"\nrack = \"1\"\n").unwrap();
        let flags = AgentOptions {
            name: Some("flag".into()),
            tags: BTreeMap::from([("zone".into(), "b".into())]),
            join: vec!["b:2".into()],
            ..Default::default()
        };
        let s = flags.over(file).resolve().unwrap();
        assert_eq!(s.name, "flag");
        assert_eq!(s.bind, "127.0.0.1:1".parse().unwrap());
        assert_eq!(
            s.advertise, s.bind,
            "a specific bind address is advertised as is"
        );
        assert_eq!(s.tags["zone"], "b");
        assert_eq!(s.tags["rack"], "1");
        assert_eq!(s.join, vec!["a:1".to_string(), "b:2".to_string()]);
    }

    #[test]
    fn bad_values_get_clear_errors() {
        let e = AgentOptions {
            bind: Some("nope".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("--bind"), "{e}");
        assert!(parse_tags(&["novalue".into()]).is_err());
        assert_eq!(parse_tags(&["k=v=w".into()]).unwrap()["k"], "v=w");
        assert!(toml::from_str::<AgentOptions>("unknown = 1").is_err());
        let slow: AgentOptions =
            toml::from_str("[membership]\nprobe_period_ms = 1000\nsuspect_ms = 4000\n").unwrap();
        let s = slow.resolve().unwrap();
        assert_eq!(s.core.probe_period, std::time::Duration::from_secs(1));
        assert_eq!(
            s.core.suspect_to_down_after,
            std::time::Duration::from_secs(4)
        );
        let state: AgentOptions =
            toml::from_str("[state]\ntombstone_grace_secs = 5\nreap_after_hours = 2\n").unwrap();
        let core = state.resolve().unwrap().core;
        assert_eq!(core.tombstone_grace, std::time::Duration::from_secs(5));
        assert_eq!(core.reap_after, std::time::Duration::from_secs(7200));
        assert!(core.collect_tombstones);
        let bad: AgentOptions = toml::from_str("[membership]\nprobe_rtt_ms = 500\n").unwrap();
        assert!(matches!(bad.resolve(), Err(SettingsError::Membership)));
    }
}
