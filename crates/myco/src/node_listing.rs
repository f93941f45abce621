//! `myco nodes` and `myco peers` as a table: what each node has, what its
//! instances reserve, and what it is using right now.

use myco_proto::api::{NodeInfo, NodeUsage};

use crate::table::Listing;

const MIB: u64 = 1 << 20;

impl Listing for NodeInfo {
    const COLUMNS: &'static [&'static str] =
        &["NAME", "ID", "STATE", "ADDR", "CPU", "MEMORY", "TAGS"];
    fn row(&self) -> Vec<String> {
        vec![
            format!("{}{}", self.name, if self.is_self { " *" } else { "" }),
            self.id.clone(),
            if self.draining {
                format!("{} (draining)", self.state)
            } else {
                self.state.clone()
            },
            self.addr.clone(),
            cpu_cell(self),
            memory_cell(self),
            self.tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]
    }
}

/// `12% used, 0.5/4 alloc`: live use of the machine, then what instances
/// reserve of its capacity, in cores; `-` for the live part when the node
/// has not reported (down, or an older release).
fn cpu_cell(node: &NodeInfo) -> String {
    let used = node
        .usage
        .as_ref()
        .map_or("-".to_string(), |u: &NodeUsage| {
            format!("{}%", u.cpu_percent)
        });
    format!(
        "{used} used, {}/{} alloc",
        cores(node.allocated.cpu_milli),
        cores(node.capacity.cpu_milli)
    )
}

/// `812 MiB used, 256/3906 MiB alloc`, the same way for memory.
fn memory_cell(node: &NodeInfo) -> String {
    let used = node
        .usage
        .as_ref()
        .map_or("-".to_string(), |u| format!("{} MiB", u.mem_bytes / MIB));
    format!(
        "{used} used, {}/{} MiB alloc",
        node.allocated.memory_mb, node.capacity.memory_mb
    )
}

/// Thousandths of a core as a short decimal: 500 → `0.5`, 4000 → `4`.
fn cores(milli: u64) -> String {
    let s = format!("{:.3}", milli as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_proto::api::Resources;

    fn node(usage: Option<NodeUsage>) -> NodeInfo {
        NodeInfo {
            id: "00000000000000aa".into(),
            name: "n1".into(),
            addr: "127.0.0.1:7946".into(),
            state: "alive".into(),
            draining: false,
            tags: Default::default(),
            capacity: Resources {
                cpu_milli: 4000,
                memory_mb: 3906,
            },
            allocated: Resources {
                cpu_milli: 500,
                memory_mb: 256,
            },
            api: None,
            edge: None,
            version: None,
            is_self: true,
            state_age_ms: 0,
            usage,
        }
    }

    #[test]
    fn a_row_shows_live_use_beside_allocation_and_capacity() {
        let usage = NodeUsage {
            cpu_percent: 12,
            mem_bytes: 812 * MIB,
            mem_total_bytes: 3906 * MIB,
            ..NodeUsage::default()
        };
        let row = node(Some(usage)).row();
        assert_eq!(row[0], "n1 *");
        assert_eq!(row[4], "12% used, 0.5/4 alloc");
        assert_eq!(row[5], "812 MiB used, 256/3906 MiB alloc");
        assert_eq!(row[2], "alive");
        let draining = NodeInfo {
            draining: true,
            ..node(None)
        };
        assert_eq!(draining.row()[2], "alive (draining)");
    }

    #[test]
    fn a_node_that_has_not_reported_shows_a_dash_for_live_use() {
        let row = node(None).row();
        assert_eq!(row[4], "- used, 0.5/4 alloc");
        assert_eq!(row[5], "- used, 256/3906 MiB alloc");
    }

    #[test]
    fn cores_are_short_decimals() {
        assert_eq!(cores(0), "0");
        assert_eq!(cores(250), "0.25");
        assert_eq!(cores(4000), "4");
        assert_eq!(cores(1500), "1.5");
    }
}
