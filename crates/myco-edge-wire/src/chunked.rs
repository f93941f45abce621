//! Finds the end of a chunked body (RFC 9112 §7.1) as its bytes pass
//! through unchanged: the fast path relays the instance's chunked framing
//! as it is, and needs only to know where the body ends (then the
//! connection can carry the next request).

/// Where in the framing the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk size's hex digits (`digits` so far).
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: an extension or whitespace, up to CR.
    Ext {
        value: u64,
    },
    /// After CR of the size line.
    SizeLf {
        value: u64,
    },
    /// Inside a chunk's data.
    Data(u64),
    /// After the data: CR, then LF.
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line.
    TrailerLine,
    /// In a trailer field line, up to its LF.
    TrailerField,
    /// After CR of the empty line that ends the body.
    EndLf,
    Done,
}

/// The framing is not chunked as RFC 9112 says.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// An incremental chunked-framing scanner.
#[derive(Debug)]
pub struct Chunked(State);

impl Default for Chunked {
    fn default() -> Self {
        Chunked(State::Size {
            value: 0,
            digits: 0,
        })
    }
}

impl Chunked {
    /// Scans `data`, the next bytes of the body. `Some(n)`: the body ends
    /// after the first `n` bytes; `None`: all of them belong to it and
    /// more are to come.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.0 = match self.0 {
                State::Size { value, digits } => match (b as char).to_digit(16) {
                    // 15 hex digits: far past any real chunk, and no overflow.
                    Some(d) if digits < 15 => State::Size {
                        value: value << 4 | u64::from(d),
                        digits: digits + 1,
                    },
                    Some(_) => return Err(Malformed),
                    None if digits == 0 => return Err(Malformed),
                    None if b == b'\r' => State::SizeLf { value },
                    None if b == b';' || b == b' ' || b == b'\t' => State::Ext { value },
                    None => return Err(Malformed),
                },
                State::Ext { value } if b == b'\r' => State::SizeLf { value },
                State::Ext { value } => State::Ext { value },
                State::SizeLf { value } if b == b'\n' => {
                    if value == 0 {
                        State::TrailerLine
                    } else {
                        State::Data(value)
                    }
                }
                State::Data(n) => {
                    let take = (n as usize).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    self.0 = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    value: 0,
                    digits: 0,
                },
                State::TrailerLine if b == b'\r' => State::EndLf,
                State::TrailerLine | State::TrailerField if b == b'\n' => State::TrailerLine,
                State::TrailerLine | State::TrailerField => State::TrailerField,
                State::EndLf if b == b'\n' => {
                    self.0 = State::Done;
                    return Ok(Some(i + 1));
                }
                State::Done => return Ok(Some(i)),
                _ => return Err(Malformed),
            };
            i += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<Option<usize>, Malformed> {
        Chunked::default().feed(body)
    }

    #[test]
    fn finds_the_end_of_a_body_and_nothing_after() {
        let body = b"5\r\nhello\r\n0\r\n\r\nNEXT";
        assert_eq!(whole(body), Ok(Some(body.len() - 4)));
        let ext = b"5;name=v\r\nhello\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(whole(ext), Ok(Some(ext.len())));
    }

    #[test]
    fn a_body_split_anywhere_ends_at_the_same_place() {
        let body = b"a;x=1\r\n0123456789\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..body.len() {
            let mut c = Chunked::default();
            let first = c.feed(&body[..cut]).unwrap();
            assert_eq!(first, None, "cut at {cut}");
            let second = c.feed(&body[cut..]).unwrap();
            assert_eq!(second, Some(body.len() - cut), "cut at {cut}");
        }
    }

    #[test]
    fn bad_framing_is_refused() {
        assert_eq!(whole(b"x\r\n"), Err(Malformed));
        assert_eq!(whole(b"5\r\nhelloXX"), Err(Malformed));
        assert_eq!(whole(b"ffffffffffffffffff\r\n"), Err(Malformed));
        assert_eq!(whole(b"\r\n"), Err(Malformed));
    }
}
