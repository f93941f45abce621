//! The connection handshake: `AUTH` and `HELLO`, with Redis' arguments
//! and error wording (clients match on `NOPROTO`, `NOAUTH`, `WRONGPASS`).

use super::commands::Session;
use super::parse::reply;

/// What `HELLO` reports as the server's version: the agent's own.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Redis' rule for client names: printable ASCII without spaces.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

impl Session {
    /// True if `given` is the API token (compared in constant time), or
    /// no token is asked for.
    fn token_matches(&self, given: &[u8]) -> bool {
        match &self.token {
            None => true,
            Some(t) => {
                let t = t.as_bytes();
                t.len() == given.len()
                    && t.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
        }
    }

    /// `AUTH [user] token`: the user name is ignored (there is one token).
    pub(super) fn auth(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let given = match args.len() {
            2 => &args[1],
            3 => &args[2],
            _ => {
                reply::error(out, "ERR wrong number of arguments for 'auth' command");
                return;
            }
        };
        if self.token_matches(given) {
            self.token = None;
            reply::simple(out, "OK");
        } else {
            reply::error(
                out,
                "WRONGPASS invalid token: use the API token of this node (DATA_DIR/api-token)",
            );
        }
    }

    /// `HELLO [protover [AUTH user token] [SETNAME name]]`: switches the
    /// connection to RESP2 or RESP3 and answers with the server's facts
    /// (a map in RESP3, a flat array in RESP2). Nothing changes unless
    /// every argument is valid, as in Redis.
    pub(super) fn hello(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let mut proto = None;
        if let Some(v) = args.get(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                None => {
                    reply::error(
                        out,
                        "ERR Protocol version is not an integer or out of range",
                    );
                    return;
                }
                Some(v @ 2..=3) => proto = Some(v),
                Some(_) => {
                    reply::error(out, "NOPROTO unsupported protocol version");
                    return;
                }
            }
        }
        let (mut auth, mut name) = (None, None);
        let mut i = 2;
        while i < args.len() {
            let more = args.len() - 1 - i;
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            if opt == "AUTH" && more >= 2 {
                auth = Some(&args[i + 2]);
                i += 3;
            } else if opt == "SETNAME" && more >= 1 {
                if !valid_name(&args[i + 1]) {
                    reply::error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                    return;
                }
                name = Some(String::from_utf8_lossy(&args[i + 1]).into_owned());
                i += 2;
            } else {
                let shown: String = String::from_utf8_lossy(&args[i]).chars().take(64).collect();
                reply::error(out, &format!("ERR Syntax error in HELLO option '{shown}'"));
                return;
            }
        }
        match auth {
            Some(given) if !self.token_matches(given) => {
                reply::error(
                    out,
                    "WRONGPASS invalid token: use the API token of this node (DATA_DIR/api-token)",
                );
                return;
            }
            Some(_) => self.token = None,
            None if self.token.is_some() => {
                reply::error(
                    out,
                    "NOAUTH HELLO must be called with the client already authenticated, \
                     otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
                     authenticate the client and select the RESP protocol version at the same time",
                );
                return;
            }
            None => {}
        }
        if name.is_some() {
            self.name = name;
        }
        if let Some(v) = proto {
            self.resp3 = v == 3;
        }
        // The same seven fields as Redis, in its order.
        if self.resp3 {
            reply::map(out, 7);
        } else {
            reply::array(out, 14);
        }
        reply::bulk(out, b"server");
        reply::bulk(out, b"myco");
        reply::bulk(out, b"version");
        reply::bulk(out, VERSION.as_bytes());
        reply::bulk(out, b"proto");
        reply::int(out, if self.resp3 { 3 } else { 2 });
        reply::bulk(out, b"id");
        reply::int(out, i64::try_from(self.id).unwrap_or(i64::MAX));
        reply::bulk(out, b"mode");
        reply::bulk(out, b"standalone");
        reply::bulk(out, b"role");
        reply::bulk(out, b"master");
        reply::bulk(out, b"modules");
        reply::array(out, 0);
    }
}
