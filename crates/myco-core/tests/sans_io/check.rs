//! The checker behind the architecture invariant "the core and the wire
//! types do no I/O", run on the sources of `myco-core` and `myco-proto`
//! (CI runs it through `scripts/check-sans-io`, which also checks their
//! direct dependencies).
//!
//! A text search misses too much (`use std::net::{SocketAddr, UdpSocket}`,
//! `use std::thread;` then `thread::spawn`) and flags too much (comments).
//! So this reads Rust as tokens, without comments and literals, expands
//! every `use` tree (groups, nesting, `self`, aliases, globs) into full
//! paths, resolves each path in the code through those imports, and
//! refuses:
//! - a path under one of [`DENIED_PATHS`] (`std::fs`, `std::thread`,
//!   `std::time::Instant`, `tokio`, `rand::rng`, ...), imported or used;
//! - a glob import from a module holding a denied path (`std::net::*`);
//! - one of [`DENIED_NAMES`] anywhere (`HashMap`, `Instant`, `OsRng`, ...),
//!   however it got in scope;
//! - one of [`DENIED_MACROS`] (printing is I/O; the core logs by `tracing`).
//!
//! The `self_test_*` tests in `main.rs` prove it catches each pattern and
//! lets the allowed ones through (`scripts/check-sans-io --self-test`
//! runs them).

use std::collections::BTreeMap;

/// Paths the core may neither import nor use, by leading segments.
const DENIED_PATHS: &[&str] = &[
    // the file system, processes, threads, the environment, the OS
    "std::fs",
    "std::process",
    "std::thread",
    "std::env",
    "std::os",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    // sockets and name resolution (addresses are fine: std::net::SocketAddr)
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::ToSocketAddrs",
    // clocks: time is passed in
    "std::time::Instant",
    "std::time::SystemTime",
    "std::time::UNIX_EPOCH",
    // maps whose iteration order is random
    "std::collections::HashMap",
    "std::collections::HashSet",
    "std::collections::hash_map",
    "std::collections::hash_set",
    "std::hash::RandomState",
    // global or OS randomness: randomness comes from the node's seed
    "rand::rng",
    "rand::thread_rng",
    "rand::random",
    "rand::rngs::ThreadRng",
    "rand::rngs::OsRng",
    "rand::rngs::SysRng",
    "getrandom",
    // runtimes and system interfaces
    "tokio",
    "mio",
    "socket2",
    "async_std",
    "smol",
    "nix",
    "libc",
    "rustix",
];

/// Names refused wherever they appear in code, however they got in scope
/// (a re-export, an alias of a parent module).
const DENIED_NAMES: &[&str] = &[
    "HashMap",
    "HashSet",
    "RandomState",
    "Instant",
    "SystemTime",
    "UNIX_EPOCH",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "thread_rng",
    "ThreadRng",
    "OsRng",
    "SysRng",
    "from_os_rng",
    "try_from_os_rng",
    "from_entropy",
];

/// Macros that write to the terminal.
const DENIED_MACROS: &[&str] = &["println", "print", "eprintln", "eprint", "dbg"];

/// One token of Rust source, comments and literals left out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

/// A refused construct: where, and what it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The line it is on, from 1.
    pub line: usize,
    /// What was refused, and by which rule.
    pub what: String,
}

/// Splits source into identifiers, `::` and punctuation, skipping
/// whitespace, comments (nested too), strings (raw, byte, C), characters,
/// lifetimes and numbers.
fn lex(src: &str) -> Vec<Token> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < s.len() {
        let c = s[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(s[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&s, i, false, &mut line);
        } else if c == '\'' {
            i = skip_char_or_lifetime(&s, i);
        } else if c.is_ascii_digit() {
            while word_char(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while word_char(at(i)) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let hashes = s[i..].iter().take_while(|c| **c == '#').count();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && at(i + hashes) == '"' {
                i = skip_string(&s, i, true, &mut line);
            } else if matches!(word.as_str(), "b" | "c") && at(i) == '"' {
                i = skip_string(&s, i, false, &mut line);
            } else if word == "b" && at(i) == '\'' {
                i = skip_char_or_lifetime(&s, i);
            } else if word == "r" && hashes == 1 && word_char(at(i + 1)) {
                // A raw identifier, r#name: the name is what counts.
                let start = i + 1;
                i += 1;
                while word_char(at(i)) {
                    i += 1;
                }
                let name = s[start..i].iter().collect();
                out.push(Token {
                    tok: Tok::Ident(name),
                    line,
                });
            } else {
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Skips a string whose opening quote (or, raw, first `#`) is at `i`;
/// returns the index after it.
fn skip_string(s: &[char], mut i: usize, raw: bool, line: &mut usize) -> usize {
    let mut hashes = 0;
    while s.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    while i < s.len() {
        match s[i] {
            '\\' if !raw => i += 2,
            '"' if (1..=hashes).all(|k| s.get(i + k) == Some(&'#')) => return i + 1 + hashes,
            c => {
                *line += usize::from(c == '\n');
                i += 1;
            }
        }
    }
    i
}

/// Skips a character literal (`'x'`, `'\n'`, `'\''`, `'\u{7f}'`) or a
/// lifetime or label (`'a`) whose quote is at `i`.
fn skip_char_or_lifetime(s: &[char], i: usize) -> usize {
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    if at(i + 1) == '\\' {
        // Past the quote, the backslash and the escaped character.
        let mut j = i + 3;
        while j < s.len() && s[j] != '\'' {
            j += 1;
        }
        return j + 1;
    }
    if at(i + 2) == '\'' {
        return i + 3;
    }
    let mut j = i + 1;
    while at(j).is_alphanumeric() || at(j) == '_' {
        j += 1;
    }
    j
}

/// One path a `use` brings in: its segments (`*` last for a glob), the
/// name it binds if renamed, and its line.
type Import = (Vec<String>, Option<String>, usize);

/// Expands the use tree at `toks[*i..]` under `prefix` into full paths.
/// Stops before the `,`, `}` or `;` that ends it.
fn parse_use_tree(toks: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<Import>) {
    let mut path = prefix.to_vec();
    let mut line = toks.get(*i).map_or(0, |t| t.line);
    while let Some(t) = toks.get(*i) {
        match &t.tok {
            Tok::PathSep => *i += 1,
            // `self` names the module it is in: `{self, ..}` binds it.
            Tok::Ident(w) if w == "self" => *i += 1,
            Tok::Ident(w) if w == "as" => {
                let alias = match toks.get(*i + 1).map(|t| &t.tok) {
                    Some(Tok::Ident(a)) => a.clone(),
                    _ => String::new(),
                };
                *i += 2;
                out.push((path, Some(alias), line));
                return;
            }
            Tok::Ident(w) => {
                path.push(w.clone());
                line = t.line;
                *i += 1;
            }
            Tok::Punct('*') => {
                *i += 1;
                path.push("*".into());
                out.push((path, None, t.line));
                return;
            }
            Tok::Punct('{') => {
                *i += 1;
                while let Some(t) = toks.get(*i) {
                    if t.tok == Tok::Punct('}') {
                        *i += 1;
                        break;
                    }
                    let before = *i;
                    parse_use_tree(toks, i, &path, out);
                    if toks.get(*i).is_some_and(|t| t.tok == Tok::Punct(',')) {
                        *i += 1;
                    } else if *i == before {
                        break; // malformed: never loop
                    }
                }
                return;
            }
            _ => {
                if !path.is_empty() {
                    out.push((path, None, line));
                }
                return;
            }
        }
    }
}

fn denied_path(path: &[String]) -> Option<&'static str> {
    DENIED_PATHS.iter().copied().find(|d| {
        let d: Vec<&str> = d.split("::").collect();
        path.len() >= d.len() && path.iter().zip(&d).all(|(a, b)| a == b)
    })
}

/// A glob from a module that holds a denied path (`std::net::*`).
fn denied_glob(module: &[String]) -> Option<&'static str> {
    DENIED_PATHS.iter().copied().find(|d| {
        let d: Vec<&str> = d.split("::").collect();
        module.len() < d.len() && module.iter().zip(&d).all(|(a, b)| a == b)
    })
}

/// Every sans-IO violation in one source file.
pub fn check_source(src: &str) -> Vec<Violation> {
    let toks = lex(src);
    let mut out = Vec::new();
    let mut bindings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_use = vec![false; toks.len()];
    // Imports first: paths used above their `use` resolve too.
    let mut i = 0;
    while i < toks.len() {
        let start = i;
        match &toks[i].tok {
            Tok::Ident(w) if w == "use" => {
                i += 1;
                let mut uses = Vec::new();
                parse_use_tree(&toks, &mut i, &[], &mut uses);
                while toks.get(i).is_some_and(|t| t.tok != Tok::Punct(';')) {
                    i += 1;
                }
                i += 1;
                for (path, alias, line) in uses {
                    let what = path.join("::");
                    if path.last().is_some_and(|l| l == "*") {
                        if let Some(d) = denied_glob(&path[..path.len() - 1]) {
                            out.push(Violation {
                                line,
                                what: format!("glob import `use {what}` may bring in {d}"),
                            });
                        }
                    } else if let Some(d) = denied_path(&path) {
                        out.push(Violation {
                            line,
                            what: format!("import of {what} (denied: {d})"),
                        });
                    }
                    if let Some(last) = path.last().filter(|l| *l != "*") {
                        bindings.insert(alias.unwrap_or_else(|| last.clone()), path.clone());
                    }
                }
                let end = i.min(toks.len());
                in_use[start..end].iter_mut().for_each(|u| *u = true);
            }
            Tok::Ident(w) if w == "extern" => {
                // extern crate name [as alias];
                let ident = |k: usize| match toks.get(i + k).map(|t| &t.tok) {
                    Some(Tok::Ident(n)) => Some(n.clone()),
                    _ => None,
                };
                if let Some(name) = ident(2).filter(|_| ident(1).as_deref() == Some("crate")) {
                    if let Some(d) = denied_path(std::slice::from_ref(&name)) {
                        out.push(Violation {
                            line: toks[i].line,
                            what: format!("extern crate {name} (denied: {d})"),
                        });
                    }
                    if let Some(alias) = ident(4).filter(|_| ident(3).as_deref() == Some("as")) {
                        bindings.insert(alias, vec![name]);
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(word) = &t.tok else { continue };
        if DENIED_NAMES.contains(&word.as_str()) {
            out.push(Violation {
                line: t.line,
                what: format!("{word} (denied name)"),
            });
        }
        let next = toks.get(i + 1).map(|t| &t.tok);
        if DENIED_MACROS.contains(&word.as_str())
            && next == Some(&Tok::Punct('!'))
            && matches!(
                toks.get(i + 2).map(|t| &t.tok),
                Some(Tok::Punct('(' | '[' | '{'))
            )
        {
            out.push(Violation {
                line: t.line,
                what: format!("{word}! (writes to the terminal)"),
            });
        }
        if in_use[i] || next != Some(&Tok::PathSep) {
            continue;
        }
        // The start of a path, not a segment inside a longer one
        // (`a::b`, `Vec::<u8>::new`, `<T as Trait>::f`); a `::` with
        // nothing of the kind before it makes the path absolute.
        let prev = |k: usize| i.checked_sub(k).map(|p| &toks[p].tok);
        let absolute = prev(1) == Some(&Tok::PathSep);
        if absolute && matches!(prev(2), Some(Tok::Ident(_) | Tok::Punct('>'))) {
            continue;
        }
        let mut path = vec![word.clone()];
        let mut j = i + 1;
        while toks.get(j).map(|t| &t.tok) == Some(&Tok::PathSep) {
            match toks.get(j + 1).map(|t| &t.tok) {
                Some(Tok::Ident(seg)) => path.push(seg.clone()),
                _ => break,
            }
            j += 2;
        }
        let resolved: Vec<String> = match bindings.get(&path[0]).filter(|_| !absolute) {
            Some(full) => full.iter().chain(&path[1..]).cloned().collect(),
            None => path.clone(),
        };
        if let Some(d) = denied_path(&resolved) {
            out.push(Violation {
                line: t.line,
                what: format!(
                    "{} is {} (denied: {d})",
                    path.join("::"),
                    resolved.join("::")
                ),
            });
        }
    }
    out.sort_by_key(|v| v.line);
    out.dedup();
    out
}
