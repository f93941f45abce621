//! `myco`: the one binary. Runs the agent, talks to agents, runs a local
//! dev mesh and the simulator.

#![forbid(unsafe_code)]

mod cache_cmd;
mod cli;
mod commands;
mod connect;
mod demo;
mod deploy_slots;
mod deploy_watch;
mod dev;
mod devctx;
mod events_cmd;
mod job_cli;
mod job_cmd;
mod logfmt;
mod node_listing;
mod peer;
mod spore_cmd;
mod spore_microvm;
mod systemd;
mod table;

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::error::ErrorKind as ClapKind;

fn main() -> ExitCode {
    // The fence guard of `duplicates = "never"` instances
    // (myco_agent::exec::fence_guard): a hidden mode of this binary,
    // parsed before clap so the workload's own arguments pass untouched.
    let mut args = std::env::args_os();
    if args
        .nth(1)
        .is_some_and(|a| a == myco_agent::exec::fence_guard::ARG)
    {
        use myco_agent::exec::fence_guard;
        return match fence_guard::parse(args) {
            Ok(g) => ExitCode::from(fence_guard::run(g).clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("error: {} {e}", fence_guard::ARG);
                ExitCode::from(2)
            }
        };
    }
    if let Ok(exe) = std::env::current_exe() {
        myco_agent::exec::fence_guard::provide(exe);
    }
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed pipe (`myco nodes | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", join_causes(&chain));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with `: `, leaving out a cause its
/// predecessor already quotes (library errors often print their source
/// in their own message, which would otherwise come out twice).
fn join_causes(chain: &[String]) -> String {
    let mut out = String::new();
    for msg in chain {
        if msg.is_empty() || out.contains(msg.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(msg);
    }
    out
}

/// Help and version go to stdout as clap prints them; a usage error is one
/// line (with clap's "did you mean" suggestions) and a hint line, exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ClapKind::DisplayHelp
            | ClapKind::DisplayVersion
            | ClapKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    // The rendered text without styles: `error: ...` (maybe continued on
    // indented lines), `  tip: ...` lines, then `Usage: ...`.
    let text = e.render().to_string();
    let args: Vec<String> = std::env::args().collect();
    eprintln!("{}", one_line_usage(&text, &command_path(&args)));
    ExitCode::from(2)
}

/// The subcommand path the arguments name (`myco kv get`), for the hint.
fn command_path(args: &[String]) -> String {
    use clap::CommandFactory;
    let mut cmd = cli::Cli::command();
    let mut path = vec!["myco".to_string()];
    for a in args.iter().skip(1) {
        let Some(sub) = cmd.find_subcommand(a).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    path.join(" ")
}

/// Turns clap's multi-line error block into `error: WHAT (TIPS)` and
/// `hint: usage: ...; see `CMD --help``.
fn one_line_usage(text: &str, cmd: &str) -> String {
    let mut what: Vec<String> = Vec::new();
    let mut tips = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("error:") {
            what.push(m.trim().to_string());
        } else if let Some(t) = line.strip_prefix("tip:") {
            tips.push(t.trim().to_string());
        } else if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim().to_string());
        } else if !line.is_empty()
            && !line.starts_with("For more information")
            && usage.is_none()
            && tips.is_empty()
        {
            // The continuation of the message: the missing arguments.
            what.push(line.to_string());
        }
    }
    let mut out = format!("error: {}", what.join(" "));
    if !tips.is_empty() {
        out.push_str(&format!(" ({})", tips.join("; ")));
    }
    match usage {
        Some(u) => out.push_str(&format!("\nhint: usage: {u}; see `{cmd} --help`")),
        None => out.push_str(&format!("\nhint: see `{cmd} --help`")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_quoted_by_its_error_is_not_repeated() {
        let os = "No such file or directory (os error 2)".to_string();
        assert_eq!(join_causes(&[os.clone(), os.clone()]), os);
        assert_eq!(
            join_causes(&[format!("key file `k`: {os}"), os.clone()]),
            format!("key file `k`: {os}")
        );
        assert_eq!(
            join_causes(&["opening f".into(), os.clone()]),
            format!("opening f: {os}")
        );
    }

    #[test]
    fn usage_errors_are_one_line_and_a_hint() {
        use clap::CommandFactory;
        let e = cli::Cli::command()
            .try_get_matches_from(["myco", "nodes", "--jsn"])
            .unwrap_err();
        let text = one_line_usage(&e.render().to_string(), "myco nodes");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("error: unexpected argument '--jsn'"),
            "{text}"
        );
        assert!(lines[0].contains("--json"), "no suggestion in {text}");
        assert!(lines[1].starts_with("hint: usage: myco nodes"), "{text}");
        assert!(lines[1].contains("`myco nodes --help`"), "{text}");

        let e = cli::Cli::command()
            .try_get_matches_from(["myco", "kv", "get"])
            .unwrap_err();
        let text = one_line_usage(&e.render().to_string(), "myco kv get");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.lines().next().unwrap().ends_with("<KEY>"), "{text}");
    }

    #[test]
    fn the_hint_names_the_subcommand() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_path(&args(&["myco", "kv", "get", "x"])),
            "myco kv get"
        );
        assert_eq!(
            command_path(&args(&["myco", "--api", "u", "sim", "--nodes", "x"])),
            "myco sim"
        );
    }
}
