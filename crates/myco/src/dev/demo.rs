//! The demo job `myco dev` deploys, so the quick start shows something
//! running: job `hello`, 3 instances of a spore `myco dev` packs and signs
//! itself with the dev publisher key. The spore holds one script that runs
//! this very binary, by absolute path, as `myco demo-serve` (an HTTP server
//! answering with its job, instance and node).

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;
use myco_agent::datadir::random_bytes;
use myco_client::Client;
use myco_proto::job::JobSpec;
use myco_spore::PackMeta;

use super::node::DevNode;

/// The demo job's name.
pub const JOB: &str = "hello";

/// The job file of the demo (the spore digest filled in).
fn job_file(digest: &str) -> String {
    format!(
        "name = \"{JOB}\"\nspore = \"{digest}\"\ncount = 3\nstrategy = \"spread\"\n\
         [health]\nhttp = \"/health\"\ninterval_ms = 500\n"
    )
}

/// A POSIX shell word: `'…'` with inner quotes escaped.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Packs the demo spore into `dir`, pushes it through `client` and
/// deploys the job; the job's name.
pub fn deploy(dir: &Path, exe: &Path, key: &Path, client: &Client) -> anyhow::Result<String> {
    let src = dir.join("demo-src");
    fs::create_dir_all(&src)?;
    let script = src.join("run.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} demo-serve\n",
            sh_quote(&exe.display().to_string())
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    }
    let out = dir.join("demo-hello.spore");
    let signing = myco_spore::read_signing_key(key)?;
    let meta = PackMeta {
        name: "demo-hello".into(),
        version: myco_proto::MYCO_VERSION.into(),
        command: "./run.sh".into(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        ..PackMeta::default()
    };
    let mut file = BufWriter::new(fs::File::create(&out)?);
    myco_spore::pack(&src, meta, &signing, &mut file).context("packing the demo spore")?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let pushed = client
        .spore_push(fs::File::open(&out)?)
        .context("pushing the demo spore")?;
    let spec = JobSpec::from_toml(&job_file(&pushed.digest))?;
    client.job_deploy(&spec).context("deploying the demo job")?;
    Ok(JOB.to_string())
}

/// Makes (once) and trusts a development publisher key, so spores packed
/// with it run in the dev mesh out of the box; the key and a client of n1
/// with its token.
pub fn trust_dev_key(dir: &Path, n1: &DevNode) -> anyhow::Result<(PathBuf, Client)> {
    let key = dir.join("dev-publisher.key");
    let public = match myco_spore::read_public_key(&myco_spore::public_key_path(&key)) {
        Ok(k) => k,
        Err(_) => myco_spore::write_keypair(&key, random_bytes::<32>())?,
    };
    let token = fs::read_to_string(n1.data.join(myco_agent::datadir::API_TOKEN))?
        .trim()
        .to_string();
    let client = Client::new(&n1.api_url()).with_token(Some(token));
    client.trust_add(&myco_proto::api::TrustedKey {
        key: hex::encode(public.as_bytes()),
        comment: "myco dev publisher".into(),
    })?;
    Ok((key, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_job_file_is_valid() {
        let d = format!("sha256:{}", "a".repeat(64));
        let spec = JobSpec::from_toml(&job_file(&d)).unwrap();
        assert_eq!((spec.count, spec.name.as_str()), (3, JOB));
    }

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
