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
/// the error is sent: its framing is lost).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A header line is not what RESP allows there.
    #[error("Protocol error: {0}")]
    Protocol(&'static str),
    /// A length or count is over the limits.
    #[error("Protocol error: {0} over the limit")]
    TooLarge(&'static str),
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
            Err(ParseError::TooLarge("header line"))
        } else {
            Ok(None)
        };
    };
    let count = number(&buf[1..end]).ok_or(ParseError::Protocol("invalid multibulk length"))?;
    if count < 0 {
        return Err(ParseError::Protocol("invalid multibulk length"));
    }
    let count = usize::try_from(count).map_err(|_| ParseError::TooLarge("argument count"))?;
    if count > MAX_ARGS {
        return Err(ParseError::TooLarge("argument count"));
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
                Err(ParseError::TooLarge("header line"))
            } else {
                Ok(None)
            };
        };
        let len = number(&buf[at + 1..end]).ok_or(ParseError::Protocol("invalid bulk length"))?;
        let len = usize::try_from(len).map_err(|_| ParseError::Protocol("invalid bulk length"))?;
        if len > MAX_BULK {
            return Err(ParseError::TooLarge("bulk length"));
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

/// An inline command: words separated by spaces, ended by `\n`.
fn inline(buf: &[u8]) -> Result<Option<Parsed>, ParseError> {
    let Some(nl) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(ParseError::TooLarge("inline command"))
        } else {
            Ok(None)
        };
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args: Vec<Vec<u8>> = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if args.len() > MAX_ARGS {
        return Err(ParseError::TooLarge("argument count"));
    }
    Ok(Some((args, nl + 1)))
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
    }

    #[test]
    fn bad_and_oversized_input_is_an_error_not_a_panic() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*-1\r\n").is_err());
        assert!(parse(b"*1\r\n+PING\r\n").is_err());
        assert!(parse(b"*1\r\n$-5\r\n").is_err());
        assert!(parse(b"*1\r\n$2\r\nabcd\r\n").is_err());
        assert_eq!(
            parse(b"*99999999\r\n"),
            Err(ParseError::TooLarge("argument count"))
        );
        assert_eq!(
            parse(format!("*1\r\n${}\r\n", MAX_BULK + 1).as_bytes()),
            Err(ParseError::TooLarge("bulk length"))
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
