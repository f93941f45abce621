//! The Redis protocol's request side (RESP2 arrays of bulk strings, and
//! inline commands), parsed from a buffer with hard limits, and the reply
//! encoders. No I/O, no allocation before a length is checked: fuzzable
//! as it stands.

/// Most arguments one command may have.
pub const MAX_ARGS: usize = 1024;
/// Largest bulk string (a value of the largest size, plus room).
pub const MAX_BULK: usize = crate::cache::MAX_VALUE + 1024;
/// Longest inline command or header line.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a request could not be parsed (the connection is closed after
/// the error is sent: its framing is lost). The texts are Redis' own
/// where Redis has one (`Protocol error: unbalanced quotes in request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A header line is not what RESP allows there, or an inline
    /// command's quotes do not close.
    #[error("Protocol error: {0}")]
    Protocol(&'static str),
    /// A length or count is over the limits: `what`, at most `limit`
    /// `unit`s, so a client can tell its request from the server's limit.
    #[error("Protocol error: {what} over the limit of {limit} {unit}")]
    TooLarge {
        /// What was too large: `bulk length`, `argument count`, ...
        what: &'static str,
        /// The limit.
        limit: usize,
        /// What the limit counts: `bytes` or `arguments`.
        unit: &'static str,
    },
}

impl ParseError {
    fn bytes(what: &'static str, limit: usize) -> ParseError {
        ParseError::TooLarge {
            what,
            limit,
            unit: "bytes",
        }
    }

    fn too_many_args() -> ParseError {
        ParseError::TooLarge {
            what: "argument count",
            limit: MAX_ARGS,
            unit: "arguments",
        }
    }
}

/// A command's arguments and how many bytes of the buffer it took.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Finds `\r\n` from `from`; the index of `\r`.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn number(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses one command from the front of `buf`: `Ok(None)` if more bytes
/// are needed, else the arguments and how many bytes they took.
pub fn parse(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return inline(buf);
    }
    let Some(end) = line_end(buf, 1) else {
        return if buf.len() > MAX_LINE {
            Err(ParseError::bytes("header line", MAX_LINE))
        } else {
            Ok(None)
        };
    };
    let count = number(&buf[1..end]).ok_or(ParseError::Protocol("invalid multibulk length"))?;
    if count < 0 {
        return Err(ParseError::Protocol("invalid multibulk length"));
    }
    let count = usize::try_from(count).map_err(|_| ParseError::too_many_args())?;
    if count > MAX_ARGS {
        return Err(ParseError::too_many_args());
    }
    let mut at = end + 2;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(ParseError::Protocol("expected '$'"));
        }
        let Some(end) = line_end(buf, at + 1) else {
            return if buf.len() - at > MAX_LINE {
                Err(ParseError::bytes("header line", MAX_LINE))
            } else {
                Ok(None)
            };
        };
        let len = number(&buf[at + 1..end]).ok_or(ParseError::Protocol("invalid bulk length"))?;
        let len = usize::try_from(len).map_err(|_| ParseError::Protocol("invalid bulk length"))?;
        if len > MAX_BULK {
            return Err(ParseError::bytes("bulk length", MAX_BULK));
        }
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(ParseError::Protocol("bulk string not followed by CRLF"));
        }
        args.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Ok(Some((args, at)))
}

/// An inline command (telnet style): one line ended by `\n`, split into
/// words as Redis splits it (`sdssplitargs`): blanks separate words,
/// `"..."` takes the escapes `\n \r \t \b \a \\ \" \xHH`, `'...'`
/// only `\'`, and a closing quote must end its word.
fn inline(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(ParseError::bytes("inline command", MAX_LINE))
        } else {
            Ok(None)
        };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args = split_args(line)?;
    if args.len() > MAX_ARGS {
        return Err(ParseError::too_many_args());
    }
    Ok(Some((args, nl + 1)))
}

/// Redis' `isspace` between words.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

const UNBALANCED: ParseError = ParseError::Protocol("unbalanced quotes in request");

/// Reads the rest of a word quoted with `quote` from `i` (just past the
/// opening quote) into `word`, as Redis does: in double quotes `\xHH` and
/// `\n`, `\r`, `\t`, `\b`, `\a` (any other escaped byte is itself); in
/// single quotes only `\'`. The closing quote must end the word (a blank
/// or the line's end follows). Returns the index past it.
fn quoted(line: &[u8], mut i: usize, quote: u8, word: &mut Vec<u8>) -> Result<usize, ParseError> {
    let at = |i: usize| line.get(i).copied();
    let double = quote == b'"';
    loop {
        match (at(i), at(i + 1)) {
            (None, _) => return Err(UNBALANCED),
            (Some(b'\\'), Some(b'x'))
                if double
                    && at(i + 2).and_then(hex).is_some()
                    && at(i + 3).and_then(hex).is_some() =>
            {
                let digit = |j| at(j).and_then(hex).unwrap_or(0);
                word.push(digit(i + 2) * 16 + digit(i + 3));
                i += 4;
            }
            (Some(b'\\'), Some(c)) if double => {
                word.push(match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    c => c,
                });
                i += 2;
            }
            (Some(b'\\'), Some(b'\'')) => {
                word.push(b'\'');
                i += 2;
            }
            (Some(c), _) if c == quote => {
                i += 1;
                return match at(i).is_none_or(is_blank) {
                    true => Ok(i),
                    false => Err(UNBALANCED),
                };
            }
            (Some(c), _) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// Splits an inline command's line into its words (see [`inline`]).
fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let at = |i: usize| line.get(i).copied();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_blank) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut word = Vec::new();
        loop {
            match at(i) {
                None | Some(b' ' | b'\t' | b'\n' | b'\r') => break,
                Some(q @ (b'"' | b'\'')) => {
                    i = quoted(line, i + 1, q, &mut word)?;
                    break;
                }
                Some(c) => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        args.push(word);
    }
}

/// Reply encoders, appending to `out`.
pub mod reply {
    /// `+text`.
    pub fn simple(out: &mut Vec<u8>, text: &str) {
        out.push(b'+');
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `-text` (newlines would break the framing: replaced).
    pub fn error(out: &mut Vec<u8>, text: &str) {
        out.push(b'-');
        out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    /// `:n`.
    pub fn int(out: &mut Vec<u8>, n: i64) {
        out.extend_from_slice(format!(":{n}\r\n").as_bytes());
    }

    /// `$len` and the bytes.
    pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }

    /// The nil bulk string.
    pub fn nil(out: &mut Vec<u8>) {
        out.extend_from_slice(b"$-1\r\n");
    }

    /// An array header of `n` elements.
    pub fn array(out: &mut Vec<u8>, n: usize) {
        out.extend_from_slice(format!("*{n}\r\n").as_bytes());
    }

    /// RESP3's null (`_`), for connections that chose protocol 3.
    pub fn null(out: &mut Vec<u8>) {
        out.extend_from_slice(b"_\r\n");
    }

    /// RESP3's map header of `n` key-value pairs.
    pub fn map(out: &mut Vec<u8>, n: usize) {
        out.extend_from_slice(format!("%{n}\r\n").as_bytes());
    }

    /// An out-of-band message of `n` elements: RESP3's push frame (`>`),
    /// or a plain array in RESP2 (where only the context tells them apart).
    pub fn push(out: &mut Vec<u8>, n: usize, resp3: bool) {
        out.extend_from_slice(format!("{}{n}\r\n", if resp3 { '>' } else { '*' }).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_parse_whole_or_wait_for_more() {
        let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*1\r\n$4\r\nPING\r\n";
        let (args, used) = parse(req).unwrap().unwrap();
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"hello".to_vec()]
        );
        let (next, used2) = parse(&req[used..]).unwrap().unwrap();
        assert_eq!(next, vec![b"PING".to_vec()]);
        assert_eq!(used + used2, req.len());
        // Every strict prefix is incomplete, never an error.
        for cut in 0..used {
            assert_eq!(parse(&req[..cut]).unwrap(), None, "cut at {cut}");
        }
        // Binary values pass through.
        let (args, _) = parse(b"*1\r\n$3\r\na\r\n\r\n").unwrap().unwrap();
        assert_eq!(args, vec![b"a\r\n".to_vec()]);
    }

    #[test]
    fn inline_commands_parse() {
        let (args, used) = parse(b"PING\r\nGET  x\n").unwrap().unwrap();
        assert_eq!(args, vec![b"PING".to_vec()]);
        let (args, _) = parse(&b"PING\r\nGET  x\n"[used..]).unwrap().unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"x".to_vec()]);
        // A blank line is no command.
        assert_eq!(parse(b"  \r\n").unwrap().unwrap(), (vec![], 4));
    }

    fn words(line: &[u8]) -> Vec<Vec<u8>> {
        parse(line).unwrap().unwrap().0
    }

    /// Each case checked against redis-server 7.0 (`sdssplitargs`).
    #[test]
    fn inline_commands_take_quotes_as_redis_does() {
        assert_eq!(
            words(b"SET inl \"hello world\"\r\n"),
            [&b"SET"[..], b"inl", b"hello world"]
        );
        assert_eq!(words(b"SET k 'it\\'s'\r\n")[2], b"it's");
        // Double quotes take escapes (a bad \x is the letter x), single
        // quotes only \'.
        assert_eq!(
            words(b"SET k \"a\\x41\\n\\\"q\\xzz\\q\"\n")[2],
            b"aA\n\"qxzzq"
        );
        assert_eq!(words(b"SET k 'a\\nb'\n")[2], b"a\\nb");
        // A quote may start inside a word; an empty one is an empty word.
        assert_eq!(words(b"SET k a\"b c\"\n")[2], b"ab c");
        assert_eq!(words(b"SET k \"\"\n")[2], b"");
        // A closing quote ends its word (any blank after it); only
        // space, tab, CR and LF separate unquoted words.
        assert_eq!(words(b"SET k \"a\"\x0b\n")[2], b"a");
        assert_eq!(words(b"SET\tk\x0bv\n"), [&b"SET"[..], b"k\x0bv"]);
        let unbalanced = Err(ParseError::Protocol("unbalanced quotes in request"));
        for bad in [
            &b"SET k \"ab\"c\r\n"[..],
            b"SET k \"abc\r\n",
            b"SET k 'abc\r\n",
            b"SET k 'a'b\n",
            b"SET k \"a\\\"\n",
        ] {
            assert_eq!(parse(bad), unbalanced, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bad_and_oversized_input_is_an_error_not_a_panic() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*-1\r\n").is_err());
        assert!(parse(b"*1\r\n+PING\r\n").is_err());
        assert!(parse(b"*1\r\n$-5\r\n").is_err());
        assert!(parse(b"*1\r\n$2\r\nabcd\r\n").is_err());
        assert_eq!(parse(b"*99999999\r\n"), Err(ParseError::too_many_args()));
        // The error names the limit, for the client's sake.
        let e = parse(format!("*1\r\n${}\r\n", MAX_BULK + 1).as_bytes()).unwrap_err();
        assert_eq!(e, ParseError::bytes("bulk length", MAX_BULK));
        assert_eq!(
            e.to_string(),
            format!("Protocol error: bulk length over the limit of {MAX_BULK} bytes")
        );
        assert!(parse(&vec![b'a'; MAX_LINE + 1]).is_err());
        assert!(parse(&[b'*'; MAX_LINE + 2]).is_err());
        // Arbitrary bytes never panic.
        let mut seed = 7u64;
        let alphabet = b"*$\r\n0123-:x";
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = ((seed >> 33) % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            let _ = parse(&bytes);
        }
    }
}
