//! `myco events [--follow]`: the agent's event stream (`GET /v1/events`)
//! in a terminal, one line per event. The stream carries no history, so
//! without `--follow` the command shows what happens in the next few
//! seconds and exits; with it, it runs until the agent goes or Ctrl-C.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use myco_client::{Client, ClientError, Event};
use myco_proto::api::ApiEvent;

use crate::cli::Conn;

/// `myco events`.
#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Keep printing events until the stream ends (or Ctrl-C).
    #[arg(long, short)]
    pub follow: bool,
    /// Without --follow: how long to watch, in seconds.
    #[arg(long = "for", default_value_t = 2, value_name = "SECS")]
    pub watch_for: u64,
    /// Print each event's JSON data as it came.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// Prints events until the deadline (or the stream's end with `--follow`).
pub fn run(client: &Client, args: &EventsArgs) -> anyhow::Result<()> {
    let mut stream = client.events()?;
    let until = (!args.follow).then(|| Instant::now() + Duration::from_secs(args.watch_for));
    let mut out = std::io::stdout().lock();
    loop {
        let wait = match until {
            Some(t) => match t.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return Ok(()),
            },
            None => Duration::from_secs(3600),
        };
        match stream.next(wait) {
            Ok(Some(event)) => {
                let line = if args.json {
                    event.data.clone()
                } else {
                    describe(&event)
                };
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    // A closed pipe (`myco events -f | head`) is a normal end.
                    return Ok(());
                }
            }
            Ok(None) => {}
            Err(ClientError::StreamEnded { .. }) if !args.follow => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// One readable line for an event.
pub fn describe(event: &Event) -> String {
    match event.api() {
        Some(ApiEvent::Member {
            id,
            name,
            state,
            previous,
        }) => {
            let was = previous.map(|p| format!("{p} -> ")).unwrap_or_default();
            format!("member {name} ({id}) {was}{state}")
        }
        Some(ApiEvent::State {
            table,
            key,
            version,
            deleted,
        }) => {
            let what = if deleted { "deleted" } else { "written" };
            format!("state  {table}/{key} {what} at {version}")
        }
        Some(ApiEvent::Job { kind, job, message }) => {
            format!("job    {job} {kind}: {message}")
        }
        Some(ApiEvent::Lagged { missed }) => {
            format!("lagged {missed} events missed (this reader fell behind)")
        }
        None => format!("{} {}", event.event, event.data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: &str) -> Event {
        Event {
            event: name.into(),
            data: data.into(),
        }
    }

    #[test]
    fn heal_and_rollout_decisions_read_with_their_reason() {
        let e = ev(
            "job",
            r#"{"type":"job","kind":"moved","job":"hello","message":"n3 down: hello/2 moves to n1"}"#,
        );
        assert_eq!(
            describe(&e),
            "job    hello moved: n3 down: hello/2 moves to n1"
        );
    }

    #[test]
    fn member_changes_read_as_transitions() {
        let e = ev(
            "member",
            r#"{"type":"member","id":"ab12","name":"n3","state":"down","previous":"suspect"}"#,
        );
        assert_eq!(describe(&e), "member n3 (ab12) suspect -> down");
    }

    #[test]
    fn state_changes_name_table_and_key() {
        let e = ev(
            "state",
            r#"{"type":"state","table":"kv","key":"a/b","version":"7","deleted":true}"#,
        );
        assert_eq!(describe(&e), "state  kv/a/b deleted at 7");
    }

    #[test]
    fn unknown_events_are_shown_raw() {
        assert_eq!(describe(&ev("other", "x")), "other x");
    }
}
