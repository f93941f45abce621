//! What each Redis command does. Errors use Redis' wording where a
//! client might match on it (`ERR syntax error`, `WRONGTYPE`-free since
//! every value is a string).

use std::sync::Arc;

use myco_proto::cache::{DEFAULT_BUCKET, check_bucket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::parse::reply;
use crate::cache::{Cache, CacheError, Ttl};
use crate::msg::{Delivery, Messaging};

/// The commands this server speaks, for the error on any other.
const SUPPORTED: &str = "AUTH GET SET DEL EXISTS EXPIRE PEXPIRE TTL PTTL PUBLISH SUBSCRIBE UNSUBSCRIBE PING ECHO SELECT QUIT";

/// One connection's state: its subscriptions.
pub struct Session {
    cache: Arc<Cache>,
    msg: Arc<Messaging>,
    push: mpsc::Sender<Delivery>,
    subscribed: Vec<(String, JoinHandle<()>)>,
    /// The token to `AUTH` with first; `None` once given (or on loopback).
    token: Option<Arc<str>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for (_, task) in &self.subscribed {
            task.abort();
        }
    }
}

/// Writes a published message as Redis pushes it to subscribers.
pub fn push_message(out: &mut Vec<u8>, d: &Delivery) {
    reply::array(out, 3);
    reply::bulk(out, b"message");
    reply::bulk(out, d.topic.as_bytes());
    reply::bulk(out, &d.body);
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

fn text(arg: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(arg).map_err(|_| "ERR keys and topics must be UTF-8 here")
}

fn int(arg: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("ERR value is not an integer or out of range")
}

fn cache_error(out: &mut Vec<u8>, e: &CacheError) {
    reply::error(out, &format!("ERR {e}"));
}

impl Session {
    /// A session whose pushed messages go to `push`.
    pub fn new(
        cache: Arc<Cache>,
        msg: Arc<Messaging>,
        push: mpsc::Sender<Delivery>,
        token: Option<Arc<str>>,
    ) -> Session {
        Session {
            cache,
            msg,
            push,
            subscribed: Vec::new(),
            token,
        }
    }

    /// `AUTH [user] token`: compared in constant time with the API token.
    fn auth(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let given = match args.len() {
            2 => &args[1],
            3 => &args[2],
            _ => {
                reply::error(out, "ERR wrong number of arguments for 'auth' command");
                return;
            }
        };
        let ok = match &self.token {
            None => true,
            Some(t) => {
                let t = t.as_bytes();
                t.len() == given.len()
                    && t.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
        };
        if ok {
            self.token = None;
            reply::simple(out, "OK");
        } else {
            reply::error(
                out,
                "WRONGPASS invalid token: use the API token of this node (DATA_DIR/api-token)",
            );
        }
    }

    /// Where a Redis key lives: `bucket:rest` in `bucket` if it exists,
    /// anything else in `default`.
    fn place<'a>(&self, key: &'a str) -> (&'a str, &'a str) {
        if let Some((bucket, rest)) = key.split_once(':')
            && !rest.is_empty()
            && check_bucket(bucket).is_ok()
            && self.cache.bucket(bucket).is_some()
        {
            return (bucket, rest);
        }
        (DEFAULT_BUCKET, key)
    }

    /// Runs one command, appending its reply to `out`; true to close the
    /// connection after sending it.
    pub async fn run(&mut self, args: Vec<Vec<u8>>, out: &mut Vec<u8>) -> bool {
        let name = upper(&args[0]);
        if name == "AUTH" {
            self.auth(&args, out);
            return false;
        }
        if self.token.is_some() && !matches!(name.as_str(), "PING" | "QUIT") {
            reply::error(
                out,
                "NOAUTH Authentication required: send AUTH <API token> first (off loopback)",
            );
            return false;
        }
        if !self.subscribed.is_empty()
            && !matches!(name.as_str(), "SUBSCRIBE" | "UNSUBSCRIBE" | "PING" | "QUIT")
        {
            reply::error(
                out,
                &format!(
                    "ERR Can't execute '{}': only (UN)SUBSCRIBE, PING and QUIT are allowed in this context",
                    name.to_lowercase()
                ),
            );
            return false;
        }
        if let Err(e) = self.dispatch(&name, &args, out).await {
            reply::error(out, e);
        }
        name == "QUIT"
    }

    async fn dispatch(
        &mut self,
        name: &str,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        let arity = |min: usize, max: usize| {
            if args.len() < min || args.len() > max {
                Err("ERR wrong number of arguments for this command")
            } else {
                Ok(())
            }
        };
        match name {
            "PING" => {
                arity(1, 2)?;
                match args.get(1) {
                    Some(m) => reply::bulk(out, m),
                    None => reply::simple(out, "PONG"),
                }
            }
            "ECHO" => {
                arity(2, 2)?;
                reply::bulk(out, &args[1]);
            }
            "QUIT" | "SELECT" | "RESET" => reply::simple(out, "OK"),
            // Clients send these on connect; an answer that changes nothing
            // lets them go on.
            "CLIENT" => reply::simple(out, "OK"),
            "CONFIG" => reply::array(out, 0),
            "GET" => {
                arity(2, 2)?;
                let (b, k) = self.place(text(&args[1])?);
                match self.cache.get(b, k).await {
                    Ok(Some(v)) => reply::bulk(out, &v),
                    Ok(None) => reply::nil(out),
                    Err(e) => cache_error(out, &e),
                }
            }
            "SET" => self.set(args, out).await?,
            "DEL" | "UNLINK" => {
                arity(2, usize::MAX)?;
                let mut n = 0;
                for key in &args[1..] {
                    let (b, k) = self.place(text(key)?);
                    match self.cache.delete(b, k).await {
                        Ok(true) => n += 1,
                        Ok(false) => {}
                        Err(e) => {
                            cache_error(out, &e);
                            return Ok(());
                        }
                    }
                }
                reply::int(out, n);
            }
            "EXISTS" => {
                arity(2, usize::MAX)?;
                let mut n = 0;
                for key in &args[1..] {
                    let (b, k) = self.place(text(key)?);
                    match self.cache.get(b, k).await {
                        Ok(Some(_)) => n += 1,
                        Ok(None) => {}
                        Err(e) => {
                            cache_error(out, &e);
                            return Ok(());
                        }
                    }
                }
                reply::int(out, n);
            }
            "EXPIRE" | "PEXPIRE" => {
                arity(3, 3)?;
                let (b, k) = self.place(text(&args[1])?);
                let n = int(&args[2])?;
                let ms = if name == "EXPIRE" {
                    n.saturating_mul(1000)
                } else {
                    n
                };
                let result = if ms <= 0 {
                    self.cache.delete(b, k).await
                } else {
                    self.cache.expire(b, k, ms as u64).await
                };
                match result {
                    Ok(done) => reply::int(out, i64::from(done)),
                    Err(e) => cache_error(out, &e),
                }
            }
            "TTL" | "PTTL" => {
                arity(2, 2)?;
                let (b, k) = self.place(text(&args[1])?);
                match self.cache.ttl(b, k).await {
                    Ok(Ttl::Missing) => reply::int(out, -2),
                    Ok(Ttl::Forever) => reply::int(out, -1),
                    Ok(Ttl::Ms(ms)) if name == "PTTL" => reply::int(out, ms as i64),
                    // Rounded as Redis does.
                    Ok(Ttl::Ms(ms)) => reply::int(out, ms.div_ceil(1000) as i64),
                    Err(e) => cache_error(out, &e),
                }
            }
            "PUBLISH" => {
                arity(3, 3)?;
                match self.msg.publish(text(&args[1])?, args[2].clone(), None) {
                    Ok(n) => reply::int(out, n as i64),
                    Err(e) => reply::error(out, &format!("ERR {e}")),
                }
            }
            "SUBSCRIBE" => {
                arity(2, usize::MAX)?;
                for topic in &args[1..] {
                    let topic = text(topic)?.to_string();
                    if !self.subscribed.iter().any(|(t, _)| *t == topic) {
                        let mut sub = match self.msg.subscribe(&topic) {
                            Ok(s) => s,
                            Err(e) => {
                                reply::error(out, &format!("ERR {e}"));
                                return Ok(());
                            }
                        };
                        let push = self.push.clone();
                        let task = tokio::spawn(async move {
                            while let Some(d) = sub.recv().await {
                                if push.send(d).await.is_err() {
                                    return;
                                }
                            }
                        });
                        self.subscribed.push((topic.clone(), task));
                    }
                    reply::array(out, 3);
                    reply::bulk(out, b"subscribe");
                    reply::bulk(out, topic.as_bytes());
                    reply::int(out, self.subscribed.len() as i64);
                }
            }
            "UNSUBSCRIBE" => {
                let topics: Vec<String> = if args.len() == 1 {
                    self.subscribed.iter().map(|(t, _)| t.clone()).collect()
                } else {
                    args[1..]
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                };
                for topic in topics {
                    if let Some(i) = self.subscribed.iter().position(|(t, _)| *t == topic) {
                        self.subscribed.remove(i).1.abort();
                    }
                    reply::array(out, 3);
                    reply::bulk(out, b"unsubscribe");
                    reply::bulk(out, topic.as_bytes());
                    reply::int(out, self.subscribed.len() as i64);
                }
            }
            _ => reply::error(
                out,
                &format!(
                    "ERR unknown or unsupported command '{}': myco's cache speaks {SUPPORTED}",
                    String::from_utf8_lossy(&args[0])
                        .chars()
                        .take(64)
                        .collect::<String>()
                ),
            ),
        }
        Ok(())
    }

    /// `SET key value [EX s | PX ms] [NX | XX]`.
    async fn set(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) -> Result<(), &'static str> {
        if args.len() < 3 {
            return Err("ERR wrong number of arguments for 'set' command");
        }
        let (b, k) = self.place(text(&args[1])?);
        let (mut ttl, mut nx, mut xx) = (None, false, false);
        let mut i = 3;
        while i < args.len() {
            match upper(&args[i]).as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                opt @ ("EX" | "PX") => {
                    let n = int(args.get(i + 1).ok_or("ERR syntax error")?)?;
                    if n <= 0 {
                        return Err("ERR invalid expire time in 'set' command");
                    }
                    let n = n as u64;
                    ttl = Some(if opt == "EX" {
                        n.saturating_mul(1000)
                    } else {
                        n
                    });
                    i += 1;
                }
                _ => return Err("ERR syntax error"),
            }
            i += 1;
        }
        if nx && xx {
            return Err("ERR syntax error");
        }
        if nx || xx {
            // Checked, then written: not atomic against a concurrent
            // writer on another node (last writer wins).
            match self.cache.get(b, k).await {
                Ok(v) if v.is_some() == nx => {
                    reply::nil(out);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    cache_error(out, &e);
                    return Ok(());
                }
            }
        }
        match self.cache.set(b, k, args[2].clone(), ttl).await {
            Ok(()) => reply::simple(out, "OK"),
            Err(e) => cache_error(out, &e),
        }
        Ok(())
    }
}
