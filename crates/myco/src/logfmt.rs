//! The agent's log lines name their node: `--log-format json` lines get
//! `"node"` and `"node_name"` fields, text lines written to a file or a
//! pipe end with `node=NAME`, so lines from many nodes collected in one
//! place (journald, Loki, a test's log tails) say whose they are. A text
//! terminal shows one node and keeps its colours unchanged.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a formatter; `json` says which kind it is.
pub struct WithNode<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((id, name)) = myco_agent::log_identity::get() else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json && writer.has_ansi_escapes() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_node(&line, id, name, self.json))
    }
}

/// `line` (one formatted event, newline included) with the node added.
pub fn with_node(line: &str, id: &str, name: &str, json: bool) -> String {
    if json {
        match line.strip_prefix('{') {
            Some(rest) => {
                let name = serde_json::to_string(name).unwrap_or_default();
                format!("{{\"node\":\"{id}\",\"node_name\":{name},{rest}")
            }
            None => line.to_string(),
        }
    } else {
        let body = line.strip_suffix('\n').unwrap_or(line);
        format!("{body} node={name}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_stay_one_object_with_the_node_first() {
        let out = with_node("{\"level\":\"INFO\",\"fields\":{}}\n", "ab12", "n\"1", true);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["node"], "ab12");
        assert_eq!(v["node_name"], "n\"1");
        assert_eq!(v["level"], "INFO");
        assert!(out.ends_with('\n') && out.matches('\n').count() == 1);
    }

    #[test]
    fn text_lines_end_with_the_node_name() {
        assert_eq!(
            with_node("2026 INFO x: ready\n", "ab12", "n1", false),
            "2026 INFO x: ready node=n1\n"
        );
    }
}
