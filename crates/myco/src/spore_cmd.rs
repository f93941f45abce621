//! `myco key`, `myco spore`, `myco spores` and `myco trust`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use anyhow::{Context, bail};
use myco_proto::api::{SporeInfo, TrustedKey};
use myco_spore::{Limits, PackMeta};

use crate::cli::{Conn, KeyCmd, SporeCmd, TrustCmd};
use crate::table::{Listing, print_json, print_listing};
use myco_client::Client;

pub fn key(cmd: KeyCmd) -> anyhow::Result<()> {
    let KeyCmd::Gen { out } = cmd;
    if out.exists() {
        bail!("{} exists; refusing to overwrite a key", out.display());
    }
    myco_spore::write_keypair(&out, myco_agent::datadir::random_bytes::<32>())?;
    println!(
        "secret key {} (keep it private), public key {}.pub (give it to `myco trust add`)",
        out.display(),
        out.display()
    );
    Ok(())
}

pub fn spore(client: impl Fn(Conn) -> anyhow::Result<Client>, cmd: SporeCmd) -> anyhow::Result<()> {
    match cmd {
        SporeCmd::Pack {
            path,
            name,
            version,
            cmd,
            args,
            env,
            key,
            out,
            microvm_kernel,
            microvm_init,
        } => {
            let env: BTreeMap<String, String> = env
                .iter()
                .map(|e| {
                    e.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .context(format!("--env {e:?} is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            let signing = myco_spore::read_signing_key(&key)?;
            let out = out.unwrap_or_else(|| format!("{name}-{version}.spore").into());
            let created_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let mut meta = PackMeta {
                name,
                version,
                command: cmd,
                args,
                env,
                created_at,
                ..PackMeta::default()
            };
            // A microVM spore packs a staging directory (kernel and
            // initramfs made from PATH), removed when this scope ends.
            let staged = match (&microvm_kernel, &microvm_init) {
                (Some(kernel), Some(init)) => Some(crate::spore_microvm::stage(
                    &path, kernel, init, &out, &mut meta,
                )?),
                _ => None,
            };
            let path = staged.as_ref().map_or(path, |s| s.dir().to_path_buf());
            let tmp = out.with_extension("spore.tmp");
            if let (Ok(src), Ok(dest)) = (path.canonicalize(), std::path::absolute(&tmp))
                && dest.starts_with(&src)
            {
                bail!(
                    "--out {} is inside the directory being packed; write it elsewhere",
                    out.display()
                );
            }
            let mut file = std::io::BufWriter::new(
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
            );
            let info = myco_spore::pack(&path, meta, &signing, &mut file)?;
            // A failed final flush must fail the command, not vanish in drop.
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &out)?;
            println!("{} {} ({} bytes)", info.digest, out.display(), info.size);
            Ok(())
        }
        SporeCmd::Inspect { file, out } => {
            let inspected = myco_spore::inspect(BufReader::new(open(&file)?))?;
            if out.json {
                return print_json(&inspected.manifest);
            }
            let m = &inspected.manifest;
            println!("name       {}", m.name);
            println!("version    {}", m.version);
            println!("command    {} {}", m.command, m.args.join(" "));
            println!("publisher  {}", m.publisher);
            println!(
                "payload    {} bytes, sha256 {}",
                m.payload_size, m.payload_sha256
            );
            println!("created    {}", m.created_at);
            println!("(not verified: use `myco spore verify`)");
            Ok(())
        }
        SporeCmd::Verify { file, pubkey } => {
            let trusted = match &pubkey {
                Some(p) => vec![myco_spore::read_public_key(p)?],
                None => Vec::new(),
            };
            let v = match myco_spore::verify(
                BufReader::new(open(&file)?),
                &trusted,
                &Limits::default(),
            ) {
                // "Not trusted; `myco trust add` it" is the agent's advice,
                // not this question's answer.
                Err(myco_spore::SporeError::Untrusted { publisher }) => bail!(
                    "{} is not signed by the given key {}: its publisher is {publisher}",
                    file.display(),
                    pubkey
                        .as_deref()
                        .unwrap_or(std::path::Path::new("?"))
                        .display()
                ),
                other => other?,
            };
            let by = if trusted.is_empty() {
                "its own publisher key (no --pubkey given)"
            } else {
                "the given key"
            };
            println!(
                "ok {} {}@{} signed by {by}",
                v.digest, v.manifest.name, v.manifest.version
            );
            Ok(())
        }
        SporeCmd::Push { file, out, conn } => {
            let client = client(conn)?;
            let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let size = f.metadata()?.len();
            // A progress bar only for a person at a terminal; scripts get none.
            let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !out.json {
                let bar = indicatif::ProgressBar::new(size);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .expect("the template is valid"),
                );
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            let answer = client.spore_push(bar.wrap_read(f));
            bar.finish_and_clear();
            let digest = answer?.digest;
            if out.json {
                return print_json(&serde_json::json!({"digest": digest}));
            }
            println!("pushed {digest}");
            Ok(())
        }
    }
}

pub fn spores(c: &Client, json: bool) -> anyhow::Result<()> {
    let list = c.spores()?;
    print_listing(&list, json)?;
    if !json && !list.is_empty() {
        println!(
            "\nHERE: whether the node asked ({}) holds a copy; a node without one fetches it from a holder when it needs it.",
            c.base()
        );
    }
    Ok(())
}

/// Opens a file named on the command line, naming it if that fails.
fn open(path: &std::path::Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

impl Listing for SporeInfo {
    const COLUMNS: &'static [&'static str] =
        &["NAME", "VERSION", "DIGEST", "BYTES", "HOLDERS", "HERE"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.version.clone(),
            self.digest.clone(),
            self.size.to_string(),
            self.holders.len().to_string(),
            if self.local {
                "yes".into()
            } else {
                "no".into()
            },
        ]
    }
}

impl Listing for TrustedKey {
    const COLUMNS: &'static [&'static str] = &["KEY", "COMMENT"];
    fn row(&self) -> Vec<String> {
        vec![self.key.clone(), self.comment.clone()]
    }
}

pub fn trust(c: &Client, cmd: TrustCmd) -> anyhow::Result<()> {
    match cmd {
        TrustCmd::Add { pubkey, comment } => {
            let key = myco_spore::read_public_key(&pubkey)?;
            let hex = hex::encode(key.as_bytes());
            c.trust_add(&TrustedKey {
                key: hex.clone(),
                comment,
            })?;
            println!("trusted {hex}");
        }
        TrustCmd::List(out) => print_listing(&c.trust_list()?, out.json)?,
        TrustCmd::Remove { key } => {
            c.trust_remove(&key)?;
            println!("no longer trusted: {key}");
        }
    }
    Ok(())
}
