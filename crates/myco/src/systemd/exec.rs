//! Arguments written for systemd's `ExecStart=` (systemd.service(5),
//! "Command lines", and the quoting of systemd.syntax(7)): a word is
//! split on whitespace and unquoted with C escapes, `%` starts a
//! specifier and `$` an environment variable, so each argument is written
//! to come back as exactly itself.

/// `arg` as one `ExecStart=` word: `%` as `%%`, `$` as `$$`; in double
/// quotes (with `\\`, `\"` and C escapes for control characters) when it
/// is empty or holds whitespace, quotes, backslashes or control
/// characters; a lone `;` (which separates commands) as `\;`.
pub fn word(arg: &str) -> String {
    if arg == ";" {
        return "\\;".into();
    }
    let quote = arg.is_empty()
        || arg
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'));
    let mut out = String::with_capacity(arg.len() + 2);
    if quote {
        out.push('"');
    }
    for c in arg.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    if quote {
        out.push('"');
    }
    out
}

/// A whole command line of [`word`]s.
pub fn line<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| word(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd's reading of a command line, for the cases [`word`] writes:
    /// words split on unquoted whitespace, double quotes, the C escapes
    /// used, `%%` and `$$`. Anything else written unescaped is an error
    /// here (systemd would expand or refuse it).
    fn systemd_words(line: &str) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                return Ok(words);
            }
            let (mut w, mut quoted) = (String::new(), false);
            while let Some(c) = chars.next() {
                match c {
                    c if c.is_whitespace() && !quoted => break,
                    '"' => quoted = !quoted,
                    '%' | '$' => match chars.next() {
                        Some(n) if n == c => w.push(c),
                        other => return Err(format!("unescaped {c} before {other:?}")),
                    },
                    '\\' => match chars.next() {
                        Some('\\') => w.push('\\'),
                        Some('"') => w.push('"'),
                        Some('n') => w.push('\n'),
                        Some('t') => w.push('\t'),
                        Some('r') => w.push('\r'),
                        Some(';') if !quoted => w.push(';'),
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).collect();
                            let n = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                            w.push(char::from_u32(n).ok_or("not a char")?);
                        }
                        other => return Err(format!("unknown escape {other:?}")),
                    },
                    '\'' if !quoted => return Err("a bare single quote".into()),
                    c => w.push(c),
                }
            }
            if quoted {
                return Err("unbalanced quotes".into());
            }
            words.push(w);
        }
    }

    #[test]
    fn every_argument_comes_back_as_itself() {
        let args = [
            "/opt/my co/myco",
            "agent",
            "--data-dir",
            "/var/lib/my data",
            "--tag",
            "zone=a b",
            "100%",
            "%n",
            "$HOME",
            "${HOME}",
            "a\"b",
            "it's",
            "back\\slash",
            "",
            ";",
            "a;b",
            "line\nbreak\ttab",
            "bell\u{7}",
            "grün",
        ];
        let written = line(&args);
        assert!(!written.contains('\n'), "{written}");
        assert_eq!(systemd_words(&written).unwrap(), args, "{written}");
    }

    #[test]
    fn plain_arguments_are_written_as_they_are() {
        assert_eq!(
            line(&[
                "/usr/local/bin/myco",
                "agent",
                "--join",
                "10.0.0.1:7946",
                "--tag=zone=a"
            ]),
            "/usr/local/bin/myco agent --join 10.0.0.1:7946 --tag=zone=a"
        );
        assert_eq!(word("50%"), "50%%");
        assert_eq!(word("$X"), "$$X");
        assert_eq!(word("a b"), "\"a b\"");
        assert_eq!(word(""), "\"\"");
    }
}
