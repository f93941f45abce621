//! Two embedded Myco nodes in one program: a cache key set on one is read
//! on the other, and a request on one is answered on the other.
//!
//! Run: `cargo run -p myco-agent --example embedded`

use std::time::Duration;

use myco_agent::Myco;
use myco_proto::ClusterKey;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Every node of a mesh needs the same cluster key; real programs read
    // it from a secret store (`myco cluster key` prints one).
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let key = ClusterKey::from_bytes(secret).to_base64();
    let base = std::env::temp_dir().join(format!("myco-embedded-example-{}", std::process::id()));

    let a = Myco::builder()
        .data_dir(base.join("a"))
        .name("a")
        .mesh_addr("127.0.0.1:0".parse()?)
        .cluster_key(&key)
        .start()
        .await?;
    let b = Myco::builder()
        .data_dir(base.join("b"))
        .name("b")
        .mesh_addr("127.0.0.1:0".parse()?)
        .join(a.mesh_addr().to_string())
        .cluster_key(&key)
        .start()
        .await?;
    while a.live_members() < 2 || b.live_members() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    a.cache()
        .set("default", "greeting", b"hello".to_vec(), None)
        .await?;
    let got = b.cache().get("default", "greeting").await?;
    println!("b reads {:?}", got.map(String::from_utf8));

    let _answering = a
        .app("demo")
        .on_request("upper", |d| async move { d.body.to_ascii_uppercase() })?;
    // Subscriptions are announced every second; ask until b knows a's.
    let answer = loop {
        match b
            .app("demo")
            .request("upper", b"shout".to_vec(), Duration::from_secs(1))
            .await
        {
            Err(myco_agent::msg::MsgError::NoSubscriber(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    println!("a answers {:?}", String::from_utf8(answer)?);

    b.stop().await;
    a.stop().await;
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
