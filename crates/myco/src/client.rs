//! A small blocking HTTP client for the agent API.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use myco_proto::api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

/// Largest answer the CLI reads.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

enum Body {
    Json(serde_json::Value),
    Raw(Vec<u8>),
    Reader(Box<dyn std::io::Read + Send + 'static>),
    None,
}

/// The token: `--token`/`MYCO_API_TOKEN`, else `api-token` in the data dir.
pub fn find_token(token: Option<String>, data_dir: Option<&Path>) -> Option<String> {
    token.or_else(|| {
        let dir = data_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(myco_agent::settings::default_data_dir);
        std::fs::read_to_string(dir.join(myco_agent::datadir::API_TOKEN))
            .ok()
            .map(|t| t.trim().to_string())
    })
}

/// Escapes a KV key (or prefix) for a URL, keeping `/` as the separator.
pub fn key_path(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    pub fn new(api: Option<&str>, token: Option<String>) -> Client {
        let base = api.unwrap_or(DEFAULT_API).trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Client { base, token, agent }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn call(&self, method: &str, path: &str, body: Body) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{}", self.base, path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            _ => {
                let mut req = if method == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match body {
                    Body::Json(v) => req.send_json(v),
                    Body::Raw(bytes) => req.send(&bytes[..]),
                    Body::Reader(r) => req.send(ureq::SendBody::from_owned_reader(r)),
                    Body::None => req.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| {
            anyhow!(
                "cannot reach the agent at {}: {e} (is `myco agent` running? pass --api URL)",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .context("reading the agent's answer")?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let msg = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            bail!("{path} answered {status}: {msg}");
        }
        Ok(bytes)
    }

    fn json(bytes: &[u8]) -> serde_json::Value {
        serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let bytes = self.call("GET", path, Body::None)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{path} answered something that is not the expected JSON"))
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.call("GET", path, Body::None)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(String::from_utf8_lossy(&self.get_bytes(path)?).into_owned())
    }

    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<serde_json::Value> {
        Ok(Self::json(&self.call(
            "POST",
            path,
            Body::Json(serde_json::to_value(body)?),
        )?))
    }

    /// Streams a reader (a file, with a progress bar) as the body of a POST.
    pub fn post_reader(
        &self,
        path: &str,
        body: impl std::io::Read + Send + 'static,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(Self::json(&self.call(
            "POST",
            path,
            Body::Reader(Box::new(body)),
        )?))
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<serde_json::Value> {
        Ok(Self::json(&self.call("PUT", path, Body::Raw(body))?))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(Self::json(&self.call("DELETE", path, Body::None)?))
    }
}
