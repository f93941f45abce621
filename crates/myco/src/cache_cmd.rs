//! `myco cache ...` and `myco msg ...`: the cache and messaging through
//! an agent's API.

use std::io::{Read, Write};
use std::time::Duration;

use clap::Subcommand;
use myco_client::Client;
use myco_proto::cache::BucketConfig;

#[derive(Subcommand, Debug)]
pub enum CacheCmd {
    /// Create or change a bucket.
    Create {
        /// The bucket.
        bucket: String,
        /// Lifetime of entries without their own, in ms (0: none).
        #[arg(long, default_value_t = 0)]
        ttl_ms: u64,
        /// Entries per node before the least recently used goes (0: no limit).
        #[arg(long, default_value_t = 100_000)]
        max_entries: u64,
        /// Copies of each entry.
        #[arg(long, default_value_t = 2)]
        replicas: u8,
    },
    /// Print an entry's value (exit 1 if absent or expired).
    Get {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Set an entry; the value is the argument, or standard input if absent or `-`.
    Put {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
        /// This entry's lifetime in ms (overrides the bucket's).
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    /// Delete an entry.
    Del {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Add to a counter (the integer an entry holds; none counts as 0),
    /// atomically mesh-wide, and print the sum.
    Incr {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What to add; negative subtracts.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
}

#[derive(Subcommand, Debug)]
pub enum MsgCmd {
    /// Publish to every subscriber of TOPIC in the mesh.
    Pub {
        /// The topic.
        topic: String,
        /// The body, or standard input if absent or `-`.
        body: Option<String>,
        /// Only this node's subscribers (id or name).
        #[arg(long)]
        node: Option<String>,
    },
    /// Print messages of TOPIC as they come, one JSON object a line.
    Sub {
        /// The topic.
        topic: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Send a request to one subscriber of TOPIC and print its answer.
    Req {
        /// The topic.
        topic: String,
        /// The body, or standard input if absent or `-`.
        body: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
}

fn body_of(arg: Option<String>) -> anyhow::Result<Vec<u8>> {
    Ok(match arg.as_deref() {
        None | Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
        Some(v) => v.as_bytes().to_vec(),
    })
}

fn print_raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    if std::io::IsTerminal::is_terminal(&out) && !bytes.is_empty() && !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Runs a `myco cache` command.
pub fn cache(c: &Client, cmd: CacheCmd) -> anyhow::Result<()> {
    match cmd {
        CacheCmd::Create {
            bucket,
            ttl_ms,
            max_entries,
            replicas,
        } => {
            let config = BucketConfig {
                ttl_ms,
                max_entries,
                replicas,
            };
            c.cache_create(&bucket, &config)?;
            println!(
                "bucket {bucket}: ttl_ms={ttl_ms} max_entries={max_entries} replicas={replicas}"
            );
        }
        CacheCmd::Get { bucket, key } => match c.cache_get(&bucket, &key)? {
            Some(v) => print_raw(&v)?,
            None => anyhow::bail!(
                "no entry {key:?} in bucket {bucket:?} (never set, deleted or expired)"
            ),
        },
        CacheCmd::Put {
            bucket,
            key,
            value,
            ttl_ms,
        } => c.cache_put(&bucket, &key, &body_of(value)?, ttl_ms)?,
        CacheCmd::Del { bucket, key } => c.cache_del(&bucket, &key)?,
        CacheCmd::Incr { bucket, key, by } => println!("{}", c.cache_incr(&bucket, &key, by)?),
    }
    Ok(())
}

/// Runs a `myco msg` command.
pub fn msg(c: &Client, cmd: MsgCmd) -> anyhow::Result<()> {
    match cmd {
        MsgCmd::Pub { topic, body, node } => {
            let p = c.msg_publish(&topic, &body_of(body)?, node.as_deref())?;
            eprintln!(
                "sent to {} node(s), {} subscriber(s) known to receive it",
                p.nodes, p.receivers
            );
        }
        MsgCmd::Sub { topic, count } => {
            let mut stream = c.msg_subscribe(&topic)?;
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                if let Some(e) = stream.next(Duration::from_secs(3600))? {
                    if e.event == "lost" {
                        eprintln!("lost messages (this subscriber was too slow): {}", e.data);
                        continue;
                    }
                    println!("{}", e.data);
                    seen += 1;
                }
            }
        }
        MsgCmd::Req {
            topic,
            body,
            timeout_ms,
        } => {
            let c = c
                .clone()
                .with_timeout(Duration::from_millis(timeout_ms) + Duration::from_secs(5));
            print_raw(&c.msg_request(&topic, &body_of(body)?, timeout_ms)?)?;
        }
    }
    Ok(())
}
