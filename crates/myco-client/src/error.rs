//! What can go wrong talking to an agent, each said in one line that tells
//! the user what to do.

use std::io;

/// Why a call to the agent API failed.
///
/// The underlying cause is part of each message rather than a separate
/// `source()`: the CLI prints one line, and the cause ("connection refused")
/// belongs in the middle of it, before the advice.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the connection was refused, the host did not resolve, or
    /// the agent did not answer in time. Nothing reached the agent, or
    /// nothing came back.
    #[error(
        "cannot reach the agent at {url} ({cause}): is an agent running? try `myco dev`, or pass --api URL"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the HTTP library reported.
        cause: ureq::Error,
    },
    /// The request could not be built or sent as asked (a malformed URL or
    /// header); a bug in the caller or a bad `--api`.
    #[error("cannot send a request to {url} ({cause}): check --api (want http://HOST:PORT)")]
    Request {
        /// The URL asked.
        url: String,
        /// What the HTTP library reported.
        cause: ureq::Error,
    },
    /// The agent answered with a status outside 2xx; `message` is its JSON
    /// error (or the body's text when it is not JSON).
    #[error("{}", api_message(path, *status, message))]
    Api {
        /// The path asked, e.g. `/v1/kv/app/color`.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The agent's explanation.
        message: String,
    },
    /// The answer began but could not be read to its end: the connection
    /// dropped, a read timed out, or it exceeded the size the client reads.
    #[error("the answer of {url} broke off ({cause}); try again")]
    Interrupted {
        /// The URL asked.
        url: String,
        /// What the HTTP library reported.
        cause: ureq::Error,
    },
    /// A 2xx answer that is not what this client expects (not the JSON
    /// shape, a missing header): most likely an agent of another version.
    #[error(
        "{url} answered something unexpected ({what}): is --api pointing at a myco agent of this version?"
    )]
    Decode {
        /// The URL asked.
        url: String,
        /// What did not match.
        what: String,
    },
    /// The event stream ended: the agent stopped, restarted or closed it.
    #[error("the event stream of {url} ended (the agent stopped or restarted); open it again")]
    StreamEnded {
        /// The URL of the stream.
        url: String,
    },
}

fn api_message(path: &str, status: u16, message: &str) -> String {
    match status {
        // The agent's own 401 text names the agent's view; the client knows
        // how its user passes a token.
        401 => format!(
            "{path} answered 401: missing or wrong API token: pass --token, MYCO_API_TOKEN or --data-dir"
        ),
        _ if message.is_empty() => format!("{path} answered {status}"),
        _ => format!("{path} answered {status}: {message}"),
    }
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the agent answered 404 (no such key, spore or node).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The I/O error kind behind an unreachable agent or a broken answer,
    /// e.g. [`io::ErrorKind::ConnectionRefused`] while the agent is down.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ClientError::Unreachable { cause, .. } | ClientError::Interrupted { cause, .. } => {
                match cause {
                    ureq::Error::Io(e) => Some(e.kind()),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_what_to_do() {
        let refused = ClientError::Unreachable {
            url: "http://127.0.0.1:1/v1/status".into(),
            cause: ureq::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        let text = refused.to_string();
        assert!(text.contains("try `myco dev`"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(refused.io_kind(), Some(io::ErrorKind::ConnectionRefused));

        let unauthorized = ClientError::Api {
            path: "/v1/kv/a".into(),
            status: 401,
            message: "whatever the agent says".into(),
        };
        assert!(
            unauthorized.to_string().contains("pass --token"),
            "{unauthorized}"
        );
        let missing = ClientError::Api {
            path: "/v1/kv/a".into(),
            status: 404,
            message: "no key \"a\"".into(),
        };
        assert_eq!(missing.to_string(), "/v1/kv/a answered 404: no key \"a\"");
        assert!(missing.is_not_found());
        assert_eq!(refused.status(), None);
    }
}
