//! The commands this server speaks, with Redis' arity rules, and Redis'
//! own error texts for an unknown command or a wrong argument count
//! (clients and checks match on them).

/// One command: its name (upper case) and Redis' arity: `n > 0` exactly
/// `n` arguments (the name included), `n < 0` at least `-n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Command {
    /// The name, upper case.
    pub name: &'static str,
    /// Redis' arity.
    pub arity: i8,
}

const fn c(name: &'static str, arity: i8) -> Command {
    Command { name, arity }
}

/// Every command spoken, the busiest first (looked up in order).
pub(super) const COMMANDS: &[Command] = &[
    c("GET", 2),
    c("SET", -3),
    c("PUBLISH", 3),
    c("INCR", 2),
    c("DEL", -2),
    c("EXISTS", -2),
    c("EXPIRE", -3),
    c("PEXPIRE", -3),
    c("TTL", 2),
    c("PTTL", 2),
    c("INCRBY", 3),
    c("DECR", 2),
    c("DECRBY", 3),
    c("UNLINK", -2),
    c("PING", -1),
    c("ECHO", 2),
    c("SUBSCRIBE", -2),
    c("UNSUBSCRIBE", -1),
    c("PUNSUBSCRIBE", -1),
    c("MULTI", 1),
    c("EXEC", 1),
    c("DISCARD", 1),
    c("WATCH", -2),
    c("UNWATCH", 1),
    c("AUTH", -2),
    c("HELLO", -1),
    c("CLIENT", -2),
    c("CONFIG", -2),
    c("COMMAND", -1),
    c("SELECT", 2),
    c("RESET", 1),
    c("QUIT", -1),
];

/// The command `name` names (any case), if spoken here.
pub(super) fn lookup(name: &[u8]) -> Option<&'static Command> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Checks a request's command and argument count, with Redis' errors.
pub(super) fn check(args: &[Vec<u8>]) -> Result<&'static Command, String> {
    let Some(cmd) = lookup(&args[0]) else {
        return Err(unknown(args));
    };
    let n = args.len();
    let arity = usize::from(cmd.arity.unsigned_abs());
    if (cmd.arity > 0 && n != arity) || n < arity {
        return Err(format!(
            "ERR wrong number of arguments for '{}' command",
            cmd.name.to_ascii_lowercase()
        ));
    }
    Ok(cmd)
}

/// Redis' text for an unknown command: the name as sent (128 bytes at
/// most) and its first arguments, quoted, up to 128 bytes in all.
fn unknown(args: &[Vec<u8>]) -> String {
    let clip = |a: &[u8], n: usize| String::from_utf8_lossy(&a[..a.len().min(n)]).into_owned();
    let mut shown = String::new();
    for a in &args[1..] {
        if shown.len() >= 128 {
            break;
        }
        shown.push('\'');
        shown.push_str(&clip(a, 128 - shown.len() + 1));
        shown.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        clip(&args[0], 128)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    /// The texts as redis-server 7.0 sends them.
    #[test]
    fn errors_read_as_redis_writes_them() {
        assert_eq!(
            check(&args(&["FOOBAR", "a", "b"])).unwrap_err(),
            "ERR unknown command 'FOOBAR', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            check(&args(&["foobar"])).unwrap_err(),
            "ERR unknown command 'foobar', with args beginning with: "
        );
        assert_eq!(
            check(&args(&["get"])).unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            check(&args(&["Set", "k"])).unwrap_err(),
            "ERR wrong number of arguments for 'set' command"
        );
        assert_eq!(
            check(&args(&["EXPIRE", "k"])).unwrap_err(),
            "ERR wrong number of arguments for 'expire' command"
        );
        assert_eq!(
            check(&args(&["set", "k", "v", "EX", "1"])).unwrap().name,
            "SET"
        );
        assert_eq!(check(&args(&["ping"])).unwrap().name, "PING");
        assert!(check(&args(&["MULTI", "x"])).is_err());
    }

    #[test]
    fn an_unknown_commands_arguments_are_shown_up_to_128_bytes() {
        // Redis: `'%.*s' ` with 128 minus what is shown so far, while
        // under 128 (one 130-byte argument shows 128 of its bytes).
        let long = "a".repeat(130);
        let e = check(&args(&["FOOBAR", &long, "b", "c"])).unwrap_err();
        assert_eq!(
            e,
            format!(
                "ERR unknown command 'FOOBAR', with args beginning with: '{}' ",
                "a".repeat(128)
            )
        );
        // After 103 bytes shown, 25 of the next argument.
        let (a, b) = ("a".repeat(100), "b".repeat(50));
        let e = check(&args(&["FOOBAR", &a, &b, "c"])).unwrap_err();
        assert!(e.ends_with(&format!("'{a}' '{}' ", "b".repeat(25))), "{e}");
        let e = check(&args(&[&"X".repeat(200)])).unwrap_err();
        assert!(e.contains(&format!("'{}',", "X".repeat(128))), "{e}");
    }

    #[test]
    fn every_name_is_upper_case_and_found_once() {
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_uppercase());
            assert_eq!(lookup(c.name.to_ascii_lowercase().as_bytes()), Some(c));
        }
    }
}
