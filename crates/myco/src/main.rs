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
mod usage;

use std::io::ErrorKind;
use std::process::ExitCode;

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
        Err(e) => return usage::error(e),
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
}
