//! What an agent starts from: its settings (flags over the TOML file), its
//! data dir (identity, start epoch, cluster keys, API token), and the
//! machine's capacity.

pub mod datadir;
pub mod settings;
pub mod sysinfo;
