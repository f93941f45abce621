//! A small blocking HTTP client for the agent API.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use myco_proto::api::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
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

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{}", self.base, path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut req = self.agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            (_, body) => {
                let mut req = self.agent.post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send_json(body.unwrap_or(serde_json::Value::Null))
            }
        };
        let mut resp = result.map_err(|e| {
            anyhow!(
                "cannot reach the agent at {}: {e} (is `myco agent` running? pass --api URL)",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the agent's answer")?;
        if !(200..300).contains(&status) {
            let msg = serde_json::from_str::<ApiError>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            bail!("{path} answered {status}: {msg}");
        }
        Ok((status, text))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let (_, text) = self.call("GET", path, None)?;
        serde_json::from_str(&text)
            .with_context(|| format!("{path} answered something that is not the expected JSON"))
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.call("GET", path, None)?.1)
    }

    pub fn post<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<serde_json::Value> {
        let (_, text) = self.call("POST", path, Some(serde_json::to_value(body)?))?;
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}
