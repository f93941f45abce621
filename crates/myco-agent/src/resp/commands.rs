//! A connection's session and what each plain command does. Errors use
//! Redis' wording where a client might match on it (`ERR syntax error`,
//! `WRONGTYPE`-free since every value is a string). Beside it: `table`
//! (names, arity, the unknown-command error), `set` (`SET`, `EXPIRE`),
//! `multi` (`MULTI`/`EXEC`), `pubsub`, `hello` (`AUTH`, `HELLO`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use myco_proto::cache::{CounterError, DEFAULT_BUCKET, check_bucket};

use super::multi::Queue;
use super::parse::reply;
use super::table;
use crate::cache::{Cache, CacheError, Ttl};
use crate::msg::{Delivery, Messaging, Subscription};

/// One connection's state: its subscriptions, its protocol version and
/// whether it has authenticated.
pub struct Session {
    pub(super) cache: Arc<Cache>,
    pub(super) msg: Arc<Messaging>,
    /// The subscriptions by topic; dropping one unsubscribes.
    pub(super) subscribed: Vec<(String, Subscription)>,
    /// Which subscription [`Session::poll_push`] looks at first.
    pub(super) next_push: usize,
    /// The token to `AUTH` with first; `None` once given (or on loopback).
    pub(super) token: Option<Arc<str>>,
    /// RESP3 once the client said `HELLO 3`: typed nulls, maps, push frames.
    pub(super) resp3: bool,
    /// This connection's number, as `HELLO` reports it.
    pub(super) id: u64,
    /// The name `HELLO ... SETNAME` gave (kept for the reply's sake only).
    pub(super) name: Option<String>,
    /// The commands queued since `MULTI`, if in a transaction.
    pub(super) multi: Option<Queue>,
}

/// Writes a published message as Redis pushes it to subscribers: an
/// array in RESP2, a push frame in RESP3.
pub fn push_message(out: &mut Vec<u8>, d: &Delivery, resp3: bool) {
    reply::push(out, 3, resp3);
    reply::bulk(out, b"message");
    reply::bulk(out, d.topic.as_bytes());
    reply::bulk(out, &d.body);
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

pub(super) fn text(arg: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(arg).map_err(|_| "ERR keys and topics must be UTF-8 here")
}

pub(super) fn int(arg: &[u8]) -> Result<i64, &'static str> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("ERR value is not an integer or out of range")
}

pub(super) fn cache_error(out: &mut Vec<u8>, e: &CacheError) {
    match e {
        // Redis' own wording, which clients match on.
        CacheError::Counter(CounterError::NotInteger | CounterError::Overflow) => {
            reply::error(out, "ERR value is not an integer or out of range");
        }
        _ => reply::error(out, &format!("ERR {e}")),
    }
}

impl Session {
    /// A session; its connection task takes published messages with
    /// `poll_push`.
    pub fn new(cache: Arc<Cache>, msg: Arc<Messaging>, token: Option<Arc<str>>) -> Session {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Session {
            cache,
            msg,
            subscribed: Vec::new(),
            next_push: 0,
            token,
            resp3: false,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: None,
            multi: None,
        }
    }

    /// Whether this connection speaks RESP3 (its pushes are framed so).
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    pub(super) fn null(&self, out: &mut Vec<u8>) {
        if self.resp3 {
            reply::null(out);
        } else {
            reply::nil(out);
        }
    }

    /// Where a Redis key lives: `bucket:rest` in `bucket` if it exists,
    /// anything else in `default`.
    pub(super) fn place<'a>(&self, key: &'a str) -> (&'a str, &'a str) {
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
    /// connection after sending it. In the order Redis checks: the name
    /// and argument count, authentication, the subscribed context, then
    /// a transaction queues what it does not run at once.
    pub async fn run(&mut self, args: Vec<Vec<u8>>, out: &mut Vec<u8>) -> bool {
        let name = match table::check(&args) {
            Ok(c) => c.name,
            Err(e) => {
                self.refuse(out, &e);
                return false;
            }
        };
        if let Err(e) = self.admit(name) {
            self.refuse(out, &e);
            return false;
        }
        match name {
            "MULTI" => self.multi(out),
            "EXEC" => self.exec(out).await,
            "DISCARD" => self.discard(out),
            "WATCH" => self.watch(out),
            _ if self.multi.is_some() && name != "QUIT" && name != "RESET" => {
                self.queue(name, args, out);
            }
            _ => return self.execute(name, &args, out).await,
        }
        false
    }

    /// Answers a command refused before it ran, which also dooms a
    /// transaction it was meant for (`EXEC` then aborts, as in Redis).
    fn refuse(&mut self, out: &mut Vec<u8>, e: &str) {
        reply::error(out, e);
        if let Some(q) = &mut self.multi {
            q.failed = true;
        }
    }

    /// Whether this connection may run `name` now.
    fn admit(&self, name: &str) -> Result<(), String> {
        if self.token.is_some() && !matches!(name, "AUTH" | "HELLO" | "PING" | "QUIT") {
            return Err(
                "NOAUTH Authentication required: send AUTH <API token> first (off loopback)".into(),
            );
        }
        // RESP2 has no way to tell a reply from a pushed message, so a
        // subscribed connection is limited as Redis limits it; RESP3
        // frames pushes apart and allows every command.
        if !self.resp3
            && !self.subscribed.is_empty()
            && !matches!(
                name,
                "SUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE" | "PING" | "QUIT" | "RESET"
            )
        {
            return Err(format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                name.to_ascii_lowercase()
            ));
        }
        Ok(())
    }

    /// Runs a command that passed [`Session::run`]'s checks (at once, or
    /// from `EXEC`); true to close the connection after the reply.
    pub(super) async fn execute(
        &mut self,
        name: &'static str,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> bool {
        if let Err(e) = self.dispatch(name, args, out).await {
            reply::error(out, &e);
        }
        name == "QUIT"
    }

    async fn dispatch(
        &mut self,
        name: &'static str,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match name {
            "GET" => {
                let (b, k) = self.place(text(&args[1])?);
                match self.cache.get(b, k).await {
                    Ok(Some(v)) => reply::bulk(out, &v),
                    Ok(None) => self.null(out),
                    Err(e) => cache_error(out, &e),
                }
            }
            "SET" => self.set(args, out).await?,
            // As Redis: the subscribers that received it.
            "PUBLISH" => match self.msg.publish(text(&args[1])?, args[2].clone(), None) {
                Ok(reach) => reply::int(out, i64::try_from(reach.receivers).unwrap_or(i64::MAX)),
                Err(e) => reply::error(out, &format!("ERR {e}")),
            },
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let by = if name.ends_with("BY") {
                    int(&args[2])?
                } else {
                    1
                };
                let by = if name.starts_with("DECR") {
                    by.checked_neg().ok_or("ERR decrement would overflow")?
                } else {
                    by
                };
                let (b, k) = self.place(text(&args[1])?);
                match self.cache.incr(b, k, by).await {
                    Ok(n) => reply::int(out, n),
                    Err(e) => cache_error(out, &e),
                }
            }
            "DEL" | "UNLINK" => {
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
            "EXPIRE" => self.expire(true, args, out).await?,
            "PEXPIRE" => self.expire(false, args, out).await?,
            "TTL" | "PTTL" => {
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
            "PING" => {
                // A subscribed RESP2 connection answers as a message
                // would look, as Redis does.
                if !self.resp3 && !self.subscribed.is_empty() {
                    reply::array(out, 2);
                    reply::bulk(out, b"pong");
                    reply::bulk(out, args.get(1).map_or(&b""[..], |m| m));
                    return Ok(());
                }
                match args.get(1) {
                    Some(m) => reply::bulk(out, m),
                    None => reply::simple(out, "PONG"),
                }
            }
            "ECHO" => reply::bulk(out, &args[1]),
            "SUBSCRIBE" => self.subscribe(args, out)?,
            "UNSUBSCRIBE" => self.unsubscribe(args, out),
            "PUNSUBSCRIBE" => self.punsubscribe(args, out),
            "AUTH" => self.auth(args, out),
            "HELLO" => self.hello(args, out),
            "CLIENT" => self.client(args, out),
            "COMMAND" => self.command(args, out),
            "CONFIG" if self.resp3 => reply::map(out, 0),
            "CONFIG" => reply::array(out, 0),
            "UNWATCH" | "SELECT" | "QUIT" => reply::simple(out, "OK"),
            "RESET" => self.reset(out),
            // MULTI, EXEC, DISCARD and WATCH never get here (`run`).
            _ => return Err(format!("ERR '{name}' cannot run here")),
        }
        Ok(())
    }

    /// `CLIENT`: `ID`, `GETNAME` and `SETNAME` as Redis answers them;
    /// the rest (`SETINFO`, which clients send on connect, ...) changes
    /// nothing and answers OK so they go on.
    fn client(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        match upper(&args[1]).as_str() {
            "ID" => reply::int(out, i64::try_from(self.id).unwrap_or(i64::MAX)),
            "GETNAME" => match &self.name {
                Some(n) => reply::bulk(out, n.as_bytes()),
                None => self.null(out),
            },
            "SETNAME" if args.len() == 3 => {
                self.name = Some(String::from_utf8_lossy(&args[2]).into_owned());
                reply::simple(out, "OK");
            }
            _ => reply::simple(out, "OK"),
        }
    }

    /// `COMMAND`: no command descriptions (an empty list, or one null per
    /// name asked for), and `COUNT`, the commands spoken, for clients
    /// that probe the server on connect.
    fn command(&self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        match args.get(1).map(|a| upper(a)).as_deref() {
            Some("COUNT") => reply::int(out, table::COMMANDS.len() as i64),
            Some("DOCS") if self.resp3 => reply::map(out, 0),
            Some("INFO") => {
                reply::array(out, args.len() - 2);
                for _ in 2..args.len() {
                    self.null(out);
                }
            }
            _ => reply::array(out, 0),
        }
    }

    /// `RESET`: the connection as new (no transaction, subscriptions or
    /// name, RESP2), except that it stays authenticated.
    fn reset(&mut self, out: &mut Vec<u8>) {
        self.multi = None;
        self.subscribed.clear();
        self.next_push = 0;
        self.name = None;
        self.resp3 = false;
        reply::simple(out, "RESET");
    }
}
