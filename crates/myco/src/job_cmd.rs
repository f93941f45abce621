//! The job commands: `deploy`, `jobs`, `job ...`, `instances`, `logs`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use myco_client::Client;
use myco_proto::job::JobSpec;
use myco_proto::jobs_api::{
    DeployChange, Deployed, InstanceInfo, JobInfo, JobVersionInfo, PlanInfo,
};

use crate::job_cli::{DeployArgs, InstancesArgs, JobCmd, LogsArgs};
use crate::table::{Listing, print_json, print_listing};

/// Reads and validates a job file: a bad field is reported before any
/// agent is asked.
pub fn read_job_file(path: &Path) -> anyhow::Result<JobSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading job file {}", path.display()))?;
    // TOML errors quote the line over several lines; errors here are one.
    JobSpec::from_toml(&text).map_err(|e| {
        let text = e.to_string();
        let words: Vec<&str> = text
            .trim_start_matches("job file: ")
            .lines()
            .map(|l| l.trim().trim_start_matches('|').trim())
            .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
            .collect();
        anyhow::anyhow!("job file {}: {}", path.display(), words.join(" "))
    })
}

fn change_words(d: &Deployed) -> String {
    let j = &d.job;
    match d.change {
        DeployChange::Created => format!("job {} created (version 1)", j.name),
        DeployChange::NewVersion => format!("job {}: new version {}", j.name, j.version),
        DeployChange::Scaled => format!(
            "job {}: count {} (version {} unchanged)",
            j.name, j.count, j.version
        ),
        DeployChange::Started => format!("job {} started again (version {})", j.name, j.version),
        DeployChange::Stopped => format!("job {} stopped (version {})", j.name, j.version),
        DeployChange::Unchanged => format!("job {} unchanged (version {})", j.name, j.version),
    }
}

/// `myco deploy FILE`.
pub fn deploy(c: &Client, args: DeployArgs) -> anyhow::Result<()> {
    let spec = read_job_file(&args.file)?;
    let deployed = c.job_deploy(&spec)?;
    if args.json {
        return print_json(&deployed);
    }
    println!("{}", change_words(&deployed));
    let terminal = std::io::stdout().is_terminal();
    if args.detach || !(terminal || args.watch) {
        return Ok(());
    }
    let wait = Duration::from_secs(args.wait);
    crate::deploy_watch::watch(c, &deployed.job, wait, !terminal)
}

/// `myco job ...`.
pub fn job(c: &Client, cmd: JobCmd) -> anyhow::Result<()> {
    match cmd {
        JobCmd::Show { name, out } => {
            let job = c.job(&name)?;
            let instances = c.instances(Some(&name))?;
            if out.json {
                return print_json(&serde_json::json!({"job": job, "instances": instances}));
            }
            show(&job, &instances)
        }
        JobCmd::Stop { name } => {
            println!("{}", change_words(&c.job_stop(&name)?));
            Ok(())
        }
        JobCmd::Scale { name, count } => {
            println!("{}", change_words(&c.job_scale(&name, count)?));
            Ok(())
        }
        JobCmd::Plan { file, out } => {
            let plan = c.job_plan(&read_job_file(&file)?)?;
            if out.json {
                return print_json(&plan);
            }
            print_plan(&plan);
            Ok(())
        }
        JobCmd::History { name, out } => print_listing(&c.job_versions(&name)?, out.json),
        JobCmd::Revert { name, version } => {
            println!("{}", change_words(&c.job_revert(&name, version)?));
            Ok(())
        }
        JobCmd::Restart { name } => {
            println!("{}", change_words(&c.job_restart(&name)?));
            Ok(())
        }
    }
}

fn show(job: &JobInfo, instances: &[InstanceInfo]) -> anyhow::Result<()> {
    println!("job       {}", job.name);
    println!(
        "version   {}{}",
        job.version,
        if job.stopped { " (stopped)" } else { "" }
    );
    println!("spore     {} ({})", job.spore, job.spore_ref);
    println!(
        "instances {} desired, {} running, {} ready",
        job.desired, job.running, job.ready
    );
    for p in &job.pending {
        println!("pending   slot {}: {}", p.slot, p.reason);
    }
    if !instances.is_empty() {
        println!();
        print_listing(instances, false)?;
    }
    Ok(())
}

fn print_plan(plan: &PlanInfo) {
    println!("job {} version {}:", plan.job, plan.version);
    for s in &plan.slots {
        match (&s.node, &s.pending) {
            (Some(id), _) => println!(
                "slot {} -> {} ({id}){}",
                s.slot,
                s.node_name.as_deref().unwrap_or(""),
                if s.kept { ", stays where it runs" } else { "" }
            ),
            (None, Some(why)) => println!("slot {} -> pending: {why}", s.slot),
            (None, None) => println!("slot {} -> pending", s.slot),
        }
        for r in &s.rejected {
            let who = if r.node_name.is_empty() {
                r.node.clone()
            } else {
                r.node_name.clone()
            };
            println!("    not {who}: {}", r.reason);
        }
    }
}

/// `myco instances`.
pub fn instances(c: &Client, args: InstancesArgs) -> anyhow::Result<()> {
    print_listing(&c.instances(args.job.as_deref())?, args.out.json)
}

/// Where a node that does not run an instance says to ask instead (a 409
/// naming `http://HOST:PORT/v1/logs/JOB?instance=ID`): the API base and
/// the instance.
fn redirect(message: &str) -> Option<(String, String)> {
    let url = message
        .split_whitespace()
        .find(|w| w.starts_with("http://"))?;
    let (base, rest) = url.split_once("/v1/logs/")?;
    let instance = rest.split_once("instance=")?.1;
    let instance = instance.split('&').next()?.trim_end_matches(['.', ',']);
    (!instance.is_empty()).then(|| (base.to_string(), instance.to_string()))
}

/// `myco logs JOB`. The node asked reads the instance's logs from whichever
/// node runs it, over the mesh streams; when that node runs an older release
/// that cannot answer, the node asked says where (409) and the CLI asks
/// there (with the same token; reads are open on a loopback API).
pub fn logs(c: &Client, args: LogsArgs) -> anyhow::Result<()> {
    let first = c.logs(&args.job, args.instance.as_deref(), args.follow, args.tail);
    let mut stream = match first {
        Err(myco_client::ClientError::Api {
            status: 409,
            ref message,
            ..
        }) if redirect(message).is_some() => {
            let (base, instance) = redirect(message).expect("just matched");
            let there = Client::new(&base).with_token(c.token().map(str::to_string));
            there.logs(&args.job, Some(&instance), args.follow, args.tail)?
        }
        other => other?,
    };
    let mut out = std::io::stdout().lock();
    // Copied in small pieces and flushed, so `--follow` shows lines as
    // they come.
    let mut buf = [0u8; 8192];
    loop {
        let n = std::io::Read::read(&mut stream, &mut buf).context("reading the log stream")?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

impl Listing for JobInfo {
    const COLUMNS: &'static [&'static str] = &[
        "NAME", "VERSION", "DESIRED", "RUNNING", "READY", "STATUS", "SPORE",
    ];
    fn row(&self) -> Vec<String> {
        let status = if self.stopped {
            "stopped".to_string()
        } else if !self.pending.is_empty() {
            format!("{} pending", self.pending.len())
        } else if self.ready >= self.desired {
            "running".into()
        } else {
            "starting".into()
        };
        vec![
            self.name.clone(),
            self.version.to_string(),
            self.desired.to_string(),
            self.running.to_string(),
            self.ready.to_string(),
            status,
            self.spore_ref.clone(),
        ]
    }
}

impl Listing for InstanceInfo {
    const COLUMNS: &'static [&'static str] = &[
        "ID", "JOB", "NODE", "STATE", "ADDR", "RESTARTS", "VERSION", "REASON",
    ];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.job.clone(),
            if self.node_name.is_empty() {
                self.node.clone()
            } else {
                self.node_name.clone()
            },
            self.state.clone(),
            self.addr.clone(),
            self.restarts.to_string(),
            self.version.to_string(),
            self.reason.clone(),
        ]
    }
}

impl Listing for JobVersionInfo {
    const COLUMNS: &'static [&'static str] = &["VERSION", "CURRENT", "COUNT", "SPORE", "DIGEST"];
    fn row(&self) -> Vec<String> {
        vec![
            self.version.to_string(),
            if self.current {
                "*".into()
            } else {
                String::new()
            },
            self.spec.count.to_string(),
            self.spore_ref.clone(),
            self.spore.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::redirect;

    #[test]
    fn a_409_names_the_node_to_ask() {
        let m = "instance web-0-v1-ab runs on node ab; this node reads only its own instances' \
                 logs: ask http://127.0.0.1:7072/v1/logs/web?instance=web-0-v1-ab";
        assert_eq!(
            redirect(m),
            Some(("http://127.0.0.1:7072".into(), "web-0-v1-ab".into()))
        );
        assert_eq!(redirect("no instance of job web"), None);
        assert_eq!(redirect("ask http://h:1/v1/logs/web?instance="), None);
    }
}
