//! `SUBSCRIBE` and `UNSUBSCRIBE`: each topic a connection subscribes to
//! gets a task moving its messages to the connection's push queue.

use super::commands::{Session, text};
use super::parse::reply;

impl Session {
    /// Subscribes to every topic named (once each), confirming each as
    /// Redis does: an array in RESP2, a push frame in RESP3.
    pub(super) fn subscribe(
        &mut self,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        for topic in &args[1..] {
            let topic = text(topic)?.to_string();
            if !self.subscribed.iter().any(|(t, _)| *t == topic) {
                let mut sub = match self.msg.subscribe(&topic) {
                    Ok(s) => s,
                    Err(e) => {
                        reply::error(out, &format!("ERR {e}"));
                        return Ok(());
                    }
                };
                let push = self.push.clone();
                let task = tokio::spawn(async move {
                    while let Some(d) = sub.recv().await {
                        if push.send(d).await.is_err() {
                            return;
                        }
                    }
                });
                self.subscribed.push((topic.clone(), task));
            }
            reply::push(out, 3, self.resp3);
            reply::bulk(out, b"subscribe");
            reply::bulk(out, topic.as_bytes());
            reply::int(out, self.subscribed.len() as i64);
        }
        Ok(())
    }

    /// Unsubscribes from the topics named, or from all without a name.
    pub(super) fn unsubscribe(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let topics: Vec<String> = if args.len() == 1 {
            self.subscribed.iter().map(|(t, _)| t.clone()).collect()
        } else {
            args[1..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        for topic in topics {
            if let Some(i) = self.subscribed.iter().position(|(t, _)| *t == topic) {
                self.subscribed.remove(i).1.abort();
            }
            reply::push(out, 3, self.resp3);
            reply::bulk(out, b"unsubscribe");
            reply::bulk(out, topic.as_bytes());
            reply::int(out, self.subscribed.len() as i64);
        }
    }
}
