//! What a node keeps in its data dir: identity key, start epoch, cluster
//! key ring and API token. Every file is written to a temp file, fsynced and
//! renamed, so a crash never leaves half a key behind; secrets are 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use myco_proto::{KeyError, KeyRing, NodeId};

/// File names inside the data dir.
pub const NODE_KEY: &str = "node.key";
/// The cluster key ring in use (first line primary).
pub const CLUSTER_KEY: &str = "cluster.key";
/// The API token.
pub const API_TOKEN: &str = "api-token";
/// The last start epoch.
pub const BOOT: &str = "boot";

/// A data dir problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should (torn write, hand edit).
    #[error(
        "{path} is corrupt ({why}); restore it from a backup, or delete it to start over (a deleted node.key gives the node a new id)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key file or environment variable holds no usable key.
    #[error("cluster key from {source_name}: {error}")]
    BadClusterKey {
        /// Where the key came from.
        source_name: String,
        /// What is wrong with it.
        error: KeyError,
    },
    /// No node key in the data dir (for `myco id`).
    #[error("no node identity in {0}: start `myco agent --data-dir {0}` once to create it")]
    NoIdentity(String),
}

/// An opened data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fills `buf` from the OS's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    buf
}

impl DataDir {
    /// Opens the data dir, creating it (0700) if needed.
    pub fn create(root: impl Into<PathBuf>) -> Result<DataDir, DataDirError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io(&root))?;
        let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o700));
        Ok(DataDir { root })
    }

    /// Opens an existing data dir without creating anything.
    pub fn open(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The data dir's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes a file atomically: temp file, fsync, rename, fsync the dir.
    pub fn write_atomic(&self, name: &str, contents: &[u8], mode: u32) -> Result<(), DataDirError> {
        let path = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.root))?;
        Ok(())
    }

    fn read_opt(&self, name: &str) -> Result<Option<String>, DataDirError> {
        let path = self.file(name);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DataDirError::Io { path, source: e }),
        }
    }

    /// The node's signing key, created on first start.
    pub fn identity(&self) -> Result<SigningKey, DataDirError> {
        if let Some(key) = self.read_identity()? {
            return Ok(key);
        }
        let secret = random_bytes::<32>();
        self.write_atomic(
            NODE_KEY,
            format!("{}\n", hex::encode(secret)).as_bytes(),
            0o600,
        )?;
        Ok(SigningKey::from_bytes(&secret))
    }

    /// The node's signing key if the data dir has one.
    pub fn read_identity(&self) -> Result<Option<SigningKey>, DataDirError> {
        let Some(text) = self.read_opt(NODE_KEY)? else {
            return Ok(None);
        };
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| DataDirError::Corrupt {
            path: self.file(NODE_KEY),
            why: "not 64 hex digits".into(),
        })?;
        Ok(Some(SigningKey::from_bytes(&secret)))
    }

    /// The node id, if the data dir has an identity.
    pub fn node_id(&self) -> Result<NodeId, DataDirError> {
        let key = self
            .read_identity()?
            .ok_or_else(|| DataDirError::NoIdentity(self.root.display().to_string()))?;
        Ok(node_id_of(&key))
    }

    /// Records and returns this start's epoch: larger than every earlier
    /// one, and at least the wall clock in ms, so it also grows across a
    /// restored backup of the data dir.
    pub fn next_boot(&self) -> Result<u64, DataDirError> {
        let prev = match self.read_opt(BOOT)? {
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| DataDirError::Corrupt {
                    path: self.file(BOOT),
                    why: "not a number".into(),
                })?,
            None => 0,
        };
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let boot = (prev + 1).max(wall);
        self.write_atomic(BOOT, format!("{boot}\n").as_bytes(), 0o600)?;
        Ok(boot)
    }

    /// The cluster key ring stored in the data dir, if any.
    pub fn read_cluster_keys(&self) -> Result<Option<KeyRing>, DataDirError> {
        let Some(text) = self.read_opt(CLUSTER_KEY)? else {
            return Ok(None);
        };
        KeyRing::parse(&text)
            .map(Some)
            .map_err(|error| DataDirError::BadClusterKey {
                source_name: self.file(CLUSTER_KEY).display().to_string(),
                error,
            })
    }

    /// Stores the key ring in use, so `myco cluster key --data-dir` prints it
    /// and a restart without flags keeps the same keys.
    pub fn write_cluster_keys(&self, ring: &KeyRing) -> Result<(), DataDirError> {
        let mut text = format!(
            "# myco cluster key ring; first key seals, all open (primary id {})\n",
            ring.primary_id()
        );
        for k in ring.keys() {
            text.push_str(&k.to_base64());
            text.push('\n');
        }
        self.write_atomic(CLUSTER_KEY, text.as_bytes(), 0o600)
    }

    /// The API token, created on first start.
    pub fn api_token(&self) -> Result<String, DataDirError> {
        if let Some(t) = self
            .read_opt(API_TOKEN)?
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        {
            return Ok(t);
        }
        let token = hex::encode(random_bytes::<32>());
        self.write_atomic(API_TOKEN, format!("{token}\n").as_bytes(), 0o600)?;
        Ok(token)
    }
}

/// The node id of a signing key.
pub fn node_id_of(key: &SigningKey) -> NodeId {
    NodeId::from_public_key(key.verifying_key().as_bytes())
}

/// Parses a key ring from text, naming where it came from in errors.
pub fn parse_keys(text: &str, source_name: &str) -> Result<KeyRing, DataDirError> {
    // Comments go first: they may contain commas, which separate keys in
    // MYCO_CLUSTER_KEY.
    let text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace(',', "\n");
    KeyRing::parse(&text).map_err(|error| DataDirError::BadClusterKey {
        source_name: source_name.to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_proto::ClusterKey;

    fn tmp() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("myco-datadir-{}", hex::encode(random_bytes::<6>())));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn identity_and_token_are_stable_and_boot_grows() {
        let root = tmp();
        let d = DataDir::create(&root).unwrap();
        let id = node_id_of(&d.identity().unwrap());
        assert_eq!(node_id_of(&d.identity().unwrap()), id);
        assert_eq!(d.node_id().unwrap(), id);
        assert_eq!(d.api_token().unwrap(), d.api_token().unwrap());
        let b1 = d.next_boot().unwrap();
        assert!(d.next_boot().unwrap() > b1);
        let mode = fs::metadata(root.join(NODE_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn corrupt_identity_is_reported_not_replaced() {
        let root = tmp();
        fs::write(root.join(NODE_KEY), "garbage").unwrap();
        let d = DataDir::open(&root);
        assert!(matches!(d.identity(), Err(DataDirError::Corrupt { .. })));
        assert!(matches!(
            DataDir::open(root.join("none")).node_id(),
            Err(DataDirError::NoIdentity(_))
        ));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn regression_key_file_comment_with_a_comma_still_parses() {
        // The agent writes such a comment into DATA_DIR/cluster.key; a
        // restart once failed on it.
        let root = tmp();
        let d = DataDir::create(&root).unwrap();
        let key = ClusterKey::from_bytes([3; 32]);
        let ring = KeyRing::new(key.clone());
        d.write_cluster_keys(&ring).unwrap();
        let text = fs::read_to_string(root.join(CLUSTER_KEY)).unwrap();
        assert!(
            text.starts_with('#') && text.contains(','),
            "the comment this test is about"
        );
        let again = parse_keys(&text, CLUSTER_KEY).unwrap();
        assert_eq!(again.primary_id(), ring.primary_id());
        assert_eq!(again.keys(), vec![key]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn env_style_keys_split_on_commas() {
        let a = ClusterKey::from_bytes([1; 32]).to_base64();
        let b = ClusterKey::from_bytes([2; 32]).to_base64();
        let ring = parse_keys(&format!("{a},{b}"), "env").unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.primary_id(), ClusterKey::from_bytes([1; 32]).id());
        assert!(parse_keys("nope", "env").is_err());
    }
}
