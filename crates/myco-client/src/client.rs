//! The client itself: base URL, token, timeouts, and the generic calls that
//! every resource method is built from.

use std::io::Read;
use std::time::Duration;

use myco_proto::api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use ureq::http::{self, HeaderMap, Method};

use crate::{ClientError, EventStream, Result};

/// Where the CLI looks for an agent when not told.
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

/// How long one call may take, unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read into memory (listings, KV values, JSON).
pub const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// How long an event stream may stay silent before the client gives up on
/// it: four of the agent's 15 s keep-alives.
const STREAM_IDLE: Duration = Duration::from_secs(60);

/// A blocking client of one agent's API. Cheap to clone; clones share
/// their pool of keep-alive connections.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    timeout: Duration,
    agent: ureq::Agent,
}

/// A 2xx answer, read whole.
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// An answer of [`Client::raw`], whatever its status.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// Header names (lower-case) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (chunked encoding undone).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

/// What a request carries.
pub(crate) enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + Send + 'a>),
}

impl Client {
    /// A client of the agent at `api`: a URL (`http://127.0.0.1:7070`) or
    /// a bare `HOST:PORT`. No token: reads only, on a loopback API.
    pub fn new(api: &str) -> Client {
        let base = api.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Client {
            base,
            token: None,
            timeout: DEFAULT_TIMEOUT,
            agent: agent(DEFAULT_TIMEOUT),
        }
    }

    /// The same client sending `Authorization: Bearer TOKEN` (none if `None`).
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    /// The same client with another per-call timeout (a download fetched
    /// from peers can take longer than a listing). Starts a fresh
    /// connection pool.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self.agent = agent(timeout);
        self
    }

    /// The base URL, e.g. `http://127.0.0.1:7070`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token sent, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `GET path`, decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let answer = self.call(Method::GET, path, Body::Empty)?;
        self.decode(path, &answer.body)
    }

    /// `POST path` with `body` as JSON, the answer decoded from JSON.
    pub fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: self.url(path),
            what: format!("the request body does not serialize: {e}"),
        })?;
        let answer = self.call(Method::POST, path, Body::Bytes(&bytes))?;
        self.decode(path, &answer.body)
    }

    /// `PUT path` with `body` as it is, the answer decoded from JSON.
    pub fn put<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T> {
        let answer = self.call(Method::PUT, path, Body::Bytes(body))?;
        self.decode(path, &answer.body)
    }

    /// `DELETE path`, the answer decoded from JSON.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let answer = self.call(Method::DELETE, path, Body::Empty)?;
        self.decode(path, &answer.body)
    }

    /// `GET path`, the answer's body as it is (at most [`MAX_ANSWER`]).
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        Ok(self.call(Method::GET, path, Body::Empty)?.body)
    }

    /// `GET path`, the answer's body as text (invalid UTF-8 replaced).
    pub fn get_text(&self, path: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.get_bytes(path)?).into_owned())
    }

    /// Sends `method path` with exactly `headers` (the token is *not*
    /// added) and `body`, and returns the answer whatever its status: for
    /// tests that probe the API with missing tokens or bad bodies. Errors
    /// only when no answer comes back.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawResponse> {
        let url = self.url(path);
        let bad = |cause| ClientError::Request {
            url: url.clone(),
            cause,
        };
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| bad(ureq::Error::Http(http::Error::from(e))))?;
        // Sized whenever the method carries a body (see `send`).
        let unsized_empty = body.is_empty() && !sends_body(&method);
        let mut builder = http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let sent = if unsized_empty {
            builder.body(()).map(|r| self.agent.run(r))
        } else {
            builder.body(body).map(|r| self.agent.run(r))
        };
        let mut resp = sent
            .map_err(|e| bad(ureq::Error::Http(e)))?
            .map_err(|e| unreachable_or_bad(&url, e))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = read_limited(&url, resp.body_mut())?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// The full URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Decodes a JSON answer.
    pub(crate) fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            url: self.url(path),
            what: e.to_string(),
        })
    }

    /// Sends a request with the token; a non-2xx answer is an error.
    pub(crate) fn call(&self, method: Method, path: &str, body: Body<'_>) -> Result<Answer> {
        let url = self.url(path);
        let mut resp = self.send(method, path, body, None)?;
        let body = read_limited(&url, resp.body_mut())?;
        Ok(Answer {
            headers: resp.headers().clone(),
            body,
        })
    }

    /// `POST path` with a streamed body (a spore file), the answer decoded.
    pub fn post_reader<T: DeserializeOwned>(
        &self,
        path: &str,
        body: impl Read + Send,
    ) -> Result<T> {
        let answer = self.call(Method::POST, path, Body::Reader(Box::new(body)))?;
        self.decode(path, &answer.body)
    }

    /// `GET path` streamed into `out`; the bytes written. No size limit:
    /// the caller decides where the bytes go.
    pub fn get_into(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        let url = self.url(path);
        let resp = self.send(Method::GET, path, Body::Empty, None)?;
        let mut reader = resp.into_body().into_reader();
        std::io::copy(&mut reader, out).map_err(|e| ClientError::Interrupted {
            url,
            cause: ureq::Error::Io(e),
        })
    }

    /// `GET path` as a byte stream with no overall deadline (connecting and
    /// the answer's head are bounded by the timeout; a stream silent for
    /// 60 s ends with an error): followed logs.
    pub fn stream(&self, path: &str) -> Result<Box<dyn Read + Send>> {
        let resp = self.send(Method::GET, path, Body::Empty, Some(&[]))?;
        Ok(Box::new(resp.into_body().into_reader()))
    }

    /// `GET path` as a server-sent event stream (`/v1/events`, and any
    /// later stream resource). No overall deadline: only connecting and the
    /// answer's head are bounded by the timeout, and a stream silent for
    /// 60 s (four missed keep-alives) ends with an error.
    pub fn event_stream(&self, path: &str) -> Result<EventStream> {
        let url = self.url(path);
        let resp = self.send(
            Method::GET,
            path,
            Body::Empty,
            Some(&[("Accept", "text/event-stream")]),
        )?;
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        Ok(EventStream::start(
            url,
            content_type,
            resp.into_body().into_reader(),
        ))
    }

    /// Sends a request with the token and returns the answer's head with
    /// its unread body; a non-2xx answer is an error. A stream
    /// (`stream_headers` given) gets no overall deadline, only an idle one.
    fn send(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
        stream_headers: Option<&[(&str, &str)]>,
    ) -> Result<http::Response<ureq::Body>> {
        let url = self.url(path);
        let bad = |cause| ClientError::Request {
            url: url.clone(),
            cause,
        };
        let sized_empty = sends_body(&method);
        let mut builder = http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in stream_headers.unwrap_or_default() {
            builder = builder.header(*k, *v);
        }
        let sent = match body {
            Body::Empty if stream_headers.is_some() => {
                let req = builder.body(()).map_err(|e| bad(ureq::Error::Http(e)))?;
                let req = self
                    .agent
                    .configure_request(req)
                    .timeout_global(None)
                    .timeout_connect(Some(self.timeout))
                    .timeout_recv_response(Some(self.timeout))
                    .timeout_per_read(Some(STREAM_IDLE))
                    .build();
                self.agent.run(req)
            }
            // A POST or PUT without a body says `content-length: 0`: left
            // unsized, ureq sends it chunked, and a handler that answers
            // before the empty last chunk arrives leaves hyper unable to
            // drain it, so the server closes the connection just after the
            // answer, racing our next request on it (seen as "Peer
            // disconnected" under load).
            Body::Empty if sized_empty => self.agent.run(
                builder
                    .body(&[][..])
                    .map_err(|e| bad(ureq::Error::Http(e)))?,
            ),
            Body::Empty => self
                .agent
                .run(builder.body(()).map_err(|e| bad(ureq::Error::Http(e)))?),
            Body::Bytes(b) => self
                .agent
                .run(builder.body(b).map_err(|e| bad(ureq::Error::Http(e)))?),
            Body::Reader(mut r) => self.agent.run(
                builder
                    .body(ureq::SendBody::from_reader(&mut *r))
                    .map_err(|e| bad(ureq::Error::Http(e)))?,
            ),
        };
        let mut resp = sent.map_err(|e| unreachable_or_bad(&url, e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&read_limited(&url, resp.body_mut())?).into_owned();
            let message = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.trim().to_string());
            return Err(ClientError::Api {
                path: path.to_string(),
                status,
                message,
            });
        }
        Ok(resp)
    }
}

/// Whether ureq sends a body for `method` (and so needs its size).
fn sends_body(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH].contains(method)
}

/// An agent that reports statuses as answers (the client maps them) and
/// bounds every call by `timeout`.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A failed send: malformed requests are the caller's; the rest means the
/// agent could not be reached.
fn unreachable_or_bad(url: &str, e: ureq::Error) -> ClientError {
    match e {
        ureq::Error::Http(_) | ureq::Error::BadUri(_) => ClientError::Request {
            url: url.to_string(),
            cause: e,
        },
        _ => ClientError::Unreachable {
            url: url.to_string(),
            cause: e,
        },
    }
}

/// Reads a whole body, at most [`MAX_ANSWER`] bytes.
fn read_limited(url: &str, body: &mut ureq::Body) -> Result<Vec<u8>> {
    body.with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(|cause| ClientError::Interrupted {
            url: url.to_string(),
            cause,
        })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// The request head a call sends, read by a listener that answers 200.
    fn head_of(call: impl FnOnce(&Client) + Send) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Client::new(&listener.local_addr().unwrap().to_string());
        std::thread::scope(|s| {
            s.spawn(|| call(&client));
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            while reader.read_line(&mut head).unwrap() > 2 {}
            (&conn)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"value\":1}")
                .unwrap();
            head.to_ascii_lowercase()
        })
    }

    #[test]
    fn a_post_without_a_body_says_its_length_is_zero() {
        // Chunked, its empty last chunk may come after the answer, and the
        // server then closes the connection the client is about to reuse.
        let head = head_of(|c| {
            c.cache_incr("b", "k", 1).unwrap();
        });
        assert!(head.contains("content-length: 0\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        let head = head_of(|c| {
            c.raw("POST", "/v1/cache/b/k", &[], b"").unwrap();
        });
        assert!(head.contains("content-length: 0\r\n"), "{head}");
    }
}
