//! Who "this node" is, for log lines: the binary's log formatter adds it to
//! every line once the agent knows it (the id comes from the data dir, so
//! the few lines before that have none). A process-wide value because the
//! log subscriber is process-wide; a process runs one agent.

use std::sync::OnceLock;

static IDENTITY: OnceLock<(String, String)> = OnceLock::new();

/// Records the node's id and name; the first call wins.
pub fn set(id: &str, name: &str) {
    let _ = IDENTITY.set((id.to_string(), name.to_string()));
}

/// The node's (id, name), once known.
pub fn get() -> Option<(&'static str, &'static str)> {
    IDENTITY.get().map(|(i, n)| (i.as_str(), n.as_str()))
}
