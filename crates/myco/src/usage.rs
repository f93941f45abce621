//! Usage errors as one line on stderr, exit 2: clap's multi-line block
//! (message, tips, usage, "For more information") becomes
//! `error: WHAT (TIPS; usage: myco CMD ...; see --help)`. Help and version
//! go to stdout as clap prints them, exit 0.

use std::process::ExitCode;

use clap::CommandFactory;
use clap::error::ErrorKind;

use crate::cli::Cli;

/// Prints `e` as the contract wants it and returns the exit code.
pub fn error(e: clap::Error) -> ExitCode {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().collect();
    eprintln!("{}", line(&e, &args));
    ExitCode::from(2)
}

/// The one line for error `e` of the command line `args`.
fn line(e: &clap::Error, args: &[String]) -> String {
    let mut root = Cli::command();
    root.build();
    let cmd = command_of(&root, args);
    let usage = cmd
        .clone()
        .render_usage()
        .to_string()
        .trim_start_matches("Usage:")
        .trim()
        .to_string();
    // `myco kv` with no subcommand: clap shows the whole help.
    let text = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let subs: Vec<&str> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            .map(|s| s.get_name())
            .collect();
        let which = if subs.is_empty() || subs.len() > 12 {
            String::new()
        } else {
            format!(": {}", subs.join(", "))
        };
        format!(
            "error: `{}` needs a subcommand{which}",
            cmd.get_bin_name().unwrap_or("myco")
        )
    } else {
        e.render().to_string()
    };
    one_line(&text, &usage)
}

/// The (sub)command the arguments name (`myco kv get`), for its usage.
fn command_of<'a>(root: &'a clap::Command, args: &[String]) -> &'a clap::Command {
    let mut cmd = root;
    for a in args.iter().skip(1) {
        if let Some(sub) = cmd.find_subcommand(a) {
            cmd = sub;
        }
    }
    cmd
}

/// Turns clap's error block into `error: WHAT (TIPS; usage: USAGE; see --help)`.
fn one_line(text: &str, usage: &str) -> String {
    let mut what: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut in_usage = false;
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("error:") {
            what.push(m.trim().to_string());
        } else if let Some(t) = line.strip_prefix("tip:") {
            notes.push(format!("tip: {}", t.trim()));
        } else if line.starts_with("Usage:") {
            in_usage = true;
        } else if !line.is_empty()
            && !line.starts_with("For more information")
            && !in_usage
            && notes.is_empty()
        {
            // The continuation of the message: the missing arguments.
            what.push(line.to_string());
        }
    }
    if !usage.is_empty() {
        notes.push(format!("usage: {usage}"));
    }
    notes.push("see --help".into());
    format!("error: {} ({})", what.join(" "), notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(args: &[&str]) -> String {
        let e = Cli::command().try_get_matches_from(args).unwrap_err();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        line(&e, &args)
    }

    #[test]
    fn usage_errors_are_one_line_with_the_usage() {
        assert_eq!(
            error_of(&["myco", "job", "scale", "web", "abc"]),
            "error: invalid value 'abc' for '<COUNT>': invalid digit found in string \
             (usage: myco job scale [OPTIONS] <NAME> <COUNT>; see --help)"
        );
        let e = error_of(&["myco", "nodes", "--jsn"]);
        assert!(
            e.starts_with("error: unexpected argument '--jsn' found (tip: "),
            "{e}"
        );
        assert!(e.contains("'--json'"), "no suggestion in {e}");
        assert!(
            e.ends_with("; usage: myco nodes [OPTIONS]; see --help)"),
            "{e}"
        );
        let e = error_of(&["myco", "kv", "get"]);
        assert!(
            e.starts_with("error: the following required arguments were not provided: <KEY> ("),
            "{e}"
        );
        let e = error_of(&["myco", "--api", "u", "frobnicate"]);
        assert!(
            e.starts_with("error: unrecognized subcommand 'frobnicate'"),
            "{e}"
        );
        for e in [e, error_of(&["myco", "kv", "get", "a", "b"])] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_missing_subcommand_is_one_line_not_the_help() {
        assert_eq!(
            error_of(&["myco", "kv"]),
            "error: `myco kv` needs a subcommand: get, put, del, list \
             (usage: myco kv [OPTIONS] <COMMAND>; see --help)"
        );
        let e = error_of(&["myco"]);
        assert!(e.starts_with("error: `myco` needs a subcommand ("), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn the_usage_is_the_subcommands() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut root = Cli::command();
        root.build();
        let name = |a: &[&str]| command_of(&root, &args(a)).get_name().to_string();
        assert_eq!(name(&["myco", "kv", "get", "x"]), "get");
        assert_eq!(name(&["myco", "--api", "u", "sim", "--nodes", "x"]), "sim");
    }
}
