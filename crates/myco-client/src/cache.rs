//! Cache buckets and app messaging (`/v1/cache`, `/v1/msg`, `/v1/replies`).

use myco_proto::cache::BucketConfig;
use myco_proto::msg::Published;
use ureq::http::Method;

use crate::client::Body;
use crate::{Client, ClientError, EventStream, Result, key_path, segment};

impl Client {
    /// `PUT /v1/cache/{bucket}`: creates or changes a bucket. Needs the token.
    pub fn cache_create(&self, bucket: &str, config: &BucketConfig) -> Result<BucketConfig> {
        let body = serde_json::to_vec(config).expect("a bucket config always encodes");
        self.put(&format!("/v1/cache/{}", segment(bucket)), &body)
    }

    /// `GET /v1/cache/{bucket}/{key}`: the value, `None` when absent or
    /// expired.
    pub fn cache_get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let path = format!("/v1/cache/{}/{}", segment(bucket), key_path(key));
        match self.call(Method::GET, &path, Body::Empty) {
            Ok(a) => Ok(Some(a.body)),
            Err(ClientError::Api {
                status: 404,
                ref message,
                ..
            }) if !message.contains("no cache bucket") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v1/cache/{bucket}/{key}[?ttl_ms=N]`: answered once the key's
    /// owners hold it. Needs the token.
    pub fn cache_put(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<()> {
        let mut path = format!("/v1/cache/{}/{}", segment(bucket), key_path(key));
        if let Some(t) = ttl_ms {
            path.push_str(&format!("?ttl_ms={t}"));
        }
        self.call(Method::PUT, &path, Body::Bytes(value))
            .map(|_| ())
    }

    /// `DELETE /v1/cache/{bucket}/{key}`. Needs the token.
    pub fn cache_del(&self, bucket: &str, key: &str) -> Result<()> {
        let path = format!("/v1/cache/{}/{}", segment(bucket), key_path(key));
        self.call(Method::DELETE, &path, Body::Empty).map(|_| ())
    }

    /// `POST /v1/cache/{bucket}/{key}?by=N`: adds `by` to the integer the
    /// entry holds (none counts as 0); the sum. Needs the token.
    pub fn cache_incr(&self, bucket: &str, key: &str, by: i64) -> Result<i64> {
        let path = format!("/v1/cache/{}/{}?by={by}", segment(bucket), key_path(key));
        let answer = self.call(Method::POST, &path, Body::Empty)?;
        let v: serde_json::Value = self.decode(&path, &answer.body)?;
        v["value"].as_i64().ok_or_else(|| ClientError::Decode {
            url: self.url(&path),
            what: "no integer `value`".into(),
        })
    }

    /// `POST /v1/msg/{topic}[?node=ID]`: publishes; the nodes it was sent
    /// to and the subscribers it reached. Needs the token.
    pub fn msg_publish(&self, topic: &str, body: &[u8], node: Option<&str>) -> Result<Published> {
        let mut path = format!("/v1/msg/{}", segment(topic));
        if let Some(n) = node {
            path.push_str(&format!("?node={}", segment(n)));
        }
        let answer = self.call(Method::POST, &path, Body::Bytes(body))?;
        self.decode(&path, &answer.body)
    }

    /// `GET /v1/msg/{topic}`: the subscription, as server-sent events
    /// whose data is `{"topic", "body" | "body_base64", "from", "reply"}`.
    pub fn msg_subscribe(&self, topic: &str) -> Result<EventStream> {
        self.event_stream(&format!("/v1/msg/{}", segment(topic)))
    }

    /// `POST /v1/msg/{topic}/request?timeout_ms=N`: one subscriber's
    /// answer (503 none anywhere, 504 none in time). Needs the token; the
    /// client's own timeout must be longer than `timeout_ms`.
    pub fn msg_request(&self, topic: &str, body: &[u8], timeout_ms: u64) -> Result<Vec<u8>> {
        let path = format!("/v1/msg/{}/request?timeout_ms={timeout_ms}", segment(topic));
        Ok(self.call(Method::POST, &path, Body::Bytes(body))?.body)
    }

    /// `POST /v1/replies/{id}`: answers the request that came with reply
    /// id `id`. Needs the token.
    pub fn msg_reply(&self, id: &str, body: &[u8]) -> Result<()> {
        let path = format!("/v1/replies/{}", segment(id));
        self.call(Method::POST, &path, Body::Bytes(body))
            .map(|_| ())
    }
}
