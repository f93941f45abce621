//! Server-sent events (`GET /v1/events`): a line parser and a stream whose
//! `next(timeout)` returns when an event arrives or the time is up.
//!
//! A blocking HTTP body cannot be read "for at most this long" and then
//! resumed, so one thread per stream reads the body and hands parsed events
//! over a bounded channel; `next` waits on the channel. The thread ends when
//! the stream ends, fails, or (at the latest at the agent's next keep-alive
//! comment, every 15 s) after the [`EventStream`] is dropped.

use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::Duration;

use myco_proto::api::ApiEvent;

use crate::ClientError;

/// Longest line of an event stream the client accepts.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest `data` of one event the client accepts. The agent's events name
/// keys and versions, never values, so they are far smaller.
pub const MAX_EVENT: usize = 64 * 1024;

/// Events parsed ahead of the reader (so at most `QUEUE * MAX_EVENT` = 16
/// MiB held); when full, the reading thread waits, and the agent reports
/// this subscriber `lagged` if it goes on.
const QUEUE: usize = 256;

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

impl Event {
    /// The data as the agent's typed event, if it is one.
    pub fn api(&self) -> Option<ApiEvent> {
        serde_json::from_str(&self.data).ok()
    }

    /// The data as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// Why a line could not be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// An event's data grew past [`MAX_EVENT`].
    TooLarge,
}

/// The `text/event-stream` line grammar: feed it lines, get events.
#[derive(Debug, Default)]
pub struct Parser {
    event: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Takes one line (with or without its `\n` / `\r\n`); returns the event
    /// a blank line completes. Comments (`:...`), `id` and `retry` are
    /// skipped; a blank line after only comments completes nothing.
    pub fn line(&mut self, line: &str) -> Result<Option<Event>, ParseError> {
        let line = line
            .strip_suffix('\n')
            .unwrap_or(line)
            .trim_end_matches('\r');
        if line.is_empty() {
            if self.event.is_none() && self.data.is_none() {
                return Ok(None);
            }
            return Ok(Some(Event {
                event: self.event.take().unwrap_or_else(|| "message".into()),
                data: self
                    .data
                    .take()
                    .map(|mut d| {
                        d.pop();
                        d
                    })
                    .unwrap_or_default(),
            }));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                // Each data line adds its value and a `\n`; dispatch drops
                // the last `\n` (the event-stream rules).
                let data = self.data.get_or_insert_with(String::new);
                if data.len() + value.len() + 1 > MAX_EVENT {
                    self.data = None;
                    self.event = None;
                    return Err(ParseError::TooLarge);
                }
                data.push_str(value);
                data.push('\n');
            }
            _ => {}
        }
        Ok(None)
    }
}

/// An open `GET /v1/events`: events as they arrive.
pub struct EventStream {
    url: String,
    content_type: String,
    events: Receiver<Result<Event, ClientError>>,
    closed: Arc<AtomicBool>,
    ended: bool,
}

impl EventStream {
    /// Starts the reading thread over an answer's body.
    pub(crate) fn start(
        url: String,
        content_type: String,
        body: impl Read + Send + 'static,
    ) -> EventStream {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        let reader_url = url.clone();
        // If the thread cannot start, the channel's sender is dropped and the
        // first `next` reports the stream ended.
        let _ = std::thread::Builder::new()
            .name("myco-events".into())
            .spawn(move || {
                pump(
                    std::io::BufReader::new(body),
                    &tx,
                    &reader_closed,
                    &reader_url,
                )
            });
        EventStream {
            url,
            content_type,
            events: rx,
            closed,
            ended: false,
        }
    }

    /// The answer's `Content-Type` (`text/event-stream` from an agent).
    pub fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The next event, or `Ok(None)` if none arrives within `timeout`.
    /// After the stream ended or failed, every call is an error.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        if self.ended {
            return Err(self.ended_error());
        }
        let got = if timeout.is_zero() {
            self.events.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            })
        } else {
            self.events.recv_timeout(timeout)
        };
        match got {
            Ok(Ok(event)) => Ok(Some(event)),
            Ok(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Err(self.ended_error())
            }
        }
    }

    fn ended_error(&self) -> ClientError {
        ClientError::StreamEnded {
            url: self.url.clone(),
        }
    }
}

/// Blocks for each event (`for event in stream`); ends after the first
/// error. To wait at most a while, call [`EventStream::next`] with a timeout.
impl Iterator for EventStream {
    type Item = Result<Event, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        match self.events.recv() {
            Ok(Ok(event)) => Some(Ok(event)),
            Ok(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            Err(_) => {
                self.ended = true;
                Some(Err(self.ended_error()))
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        // The reader sees this at its next line (events or keep-alives).
        self.closed.store(true, Ordering::Relaxed);
    }
}

/// The reading thread: lines in, events out, until the end, an error, or
/// the stream is dropped.
fn pump(
    mut body: impl BufRead,
    tx: &SyncSender<Result<Event, ClientError>>,
    closed: &AtomicBool,
    url: &str,
) {
    let mut parser = Parser::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut body)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        if closed.load(Ordering::Relaxed) {
            return;
        }
        let outcome = match read {
            Ok(0) => Err(ClientError::StreamEnded { url: url.into() }),
            Ok(_) if line.len() > MAX_LINE => Err(ClientError::Decode {
                url: url.into(),
                what: format!("an event-stream line longer than {MAX_LINE} bytes"),
            }),
            Ok(_) => match parser.line(&String::from_utf8_lossy(&line)) {
                Ok(None) => continue,
                Ok(Some(event)) => Ok(event),
                Err(ParseError::TooLarge) => Err(ClientError::Decode {
                    url: url.into(),
                    what: format!("an event larger than {MAX_EVENT} bytes"),
                }),
            },
            Err(e) => Err(ClientError::Interrupted {
                url: url.into(),
                cause: ureq::Error::Io(e),
            }),
        };
        let last = outcome.is_err();
        if tx.send(outcome).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Event> {
        let mut p = Parser::default();
        text.split_inclusive('\n')
            .filter_map(|l| p.line(l).expect("within limits"))
            .collect()
    }

    fn ev(event: &str, data: &str) -> Event {
        Event {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn events_are_split_on_blank_lines() {
        let got = parse("event: state\ndata: {\"a\":1}\n\nevent: member\ndata: x\n\n");
        assert_eq!(got, [ev("state", "{\"a\":1}"), ev("member", "x")]);
    }

    #[test]
    fn comments_and_keep_alives_are_skipped() {
        let got = parse(":\n\n: keep-alive\n\nid: 7\nretry: 10\ndata: y\n\n");
        assert_eq!(got, [ev("message", "y")]);
    }

    #[test]
    fn data_lines_join_with_newlines_and_crlf_is_accepted() {
        let got = parse("data: one\r\ndata:two\r\ndata\r\n\r\n");
        assert_eq!(got, [ev("message", "one\ntwo\n")]);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert!(parse("event: state\ndata: x\n").is_empty());
    }

    #[test]
    fn oversized_data_is_refused() {
        let mut p = Parser::default();
        let chunk = "x".repeat(MAX_LINE);
        let mut refused = false;
        for _ in 0..(MAX_EVENT / MAX_LINE + 2) {
            if p.line(&format!("data: {chunk}\n")) == Err(ParseError::TooLarge) {
                refused = true;
                break;
            }
        }
        assert!(refused, "{} bytes of data were taken", MAX_EVENT + MAX_LINE);
        // And the parser starts afresh after the refusal.
        assert_eq!(p.line("data: ok\n"), Ok(None));
        assert_eq!(p.line("\n"), Ok(Some(ev("message", "ok"))));
    }

    #[test]
    fn a_stream_hands_over_events_and_then_its_end() {
        let body = std::io::Cursor::new(b"event: state\ndata: 1\n\n: ka\n\ndata: 2\n\n".to_vec());
        let mut s = EventStream::start("u".into(), "text/event-stream".into(), body);
        let t = Duration::from_secs(5);
        assert_eq!(s.next(t).unwrap(), Some(ev("state", "1")));
        assert_eq!(s.next(t).unwrap(), Some(ev("message", "2")));
        assert!(matches!(s.next(t), Err(ClientError::StreamEnded { .. })));
        assert!(matches!(s.next(t), Err(ClientError::StreamEnded { .. })));
    }

    #[test]
    fn an_overlong_line_ends_the_stream_with_an_error() {
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_LINE));
        body.extend_from_slice(b"\n\n");
        let mut s = EventStream::start("u".into(), String::new(), std::io::Cursor::new(body));
        let got = s.next(Duration::from_secs(5));
        assert!(matches!(got, Err(ClientError::Decode { .. })), "{got:?}");
    }

    #[test]
    fn next_returns_none_when_nothing_arrives_in_time() {
        // A body that never ends: a pipe whose writer is kept open.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        let mut s = EventStream::start("u".into(), String::new(), reader);
        let t0 = std::time::Instant::now();
        assert_eq!(s.next(Duration::from_millis(50)).unwrap(), None);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        drop(writer);
        assert!(s.next(Duration::from_secs(5)).is_err());
    }
}
