//! The typed, blocking HTTP client of the Myco agent API.
//!
//! One [`Client`] (a base URL, an optional API token, a timeout) with one
//! method per API resource: [`Client::health`], [`Client::status`],
//! [`Client::nodes`], [`Client::kv_put`], [`Client::events`],
//! [`Client::spore_push`], [`Client::trust_add`], ... The shapes are
//! `myco_proto::api`'s, the ones the agent writes. Errors are
//! [`ClientError`]s whose message is one line saying what to do.
//!
//! A new resource is a few lines on top of the generic [`Client::get`],
//! [`Client::post`], [`Client::put`] and [`Client::delete`] (JSON in, JSON
//! out, non-2xx answers as [`ClientError::Api`]); [`Client::raw`] sends
//! exactly what it is given and returns whatever comes back, for tests that
//! probe the API with bad input.
//!
//! The CLI, `myco dev` and the end-to-end tests all use this crate, so the
//! API is spoken in one place.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cache;
mod client;
mod error;
pub mod events;
mod jobs;
mod resources;

pub use client::{Client, DEFAULT_API, DEFAULT_TIMEOUT, MAX_ANSWER, RawResponse};
pub use error::ClientError;
pub use events::{Event, EventStream};
pub use resources::{GcReport, Health, Joining, KvValue, Pushed};

/// A result of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Escapes a KV key (or prefix) for a URL path, keeping `/` as the
/// separator: `/v1/kv/{key_path(key)}`.
pub fn key_path(key: &str) -> String {
    escape(key, true)
}

/// Escapes one path segment (a spore digest or `NAME@VERSION`, a node
/// name): like [`key_path`], but `/` is escaped too.
pub fn segment(text: &str) -> String {
    escape(text, false)
}

/// Percent-encodes every byte but the URL-unreserved ones (and `/` if kept).
fn escape(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_keeps_slashes_and_escapes_the_rest() {
        assert_eq!(key_path("app/color"), "app/color");
        assert_eq!(key_path("a b/ü?#%"), "a%20b/%C3%BC%3F%23%25");
        assert_eq!(key_path("x-y_z.~"), "x-y_z.~");
        assert_eq!(key_path(""), "");
    }

    #[test]
    fn segment_escapes_slashes_too() {
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment("hello@1.0"), "hello%401.0");
        assert_eq!(segment("sha256:ab"), "sha256%3Aab");
    }
}
