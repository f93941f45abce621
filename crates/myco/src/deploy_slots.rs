//! Per-slot progress of a deploy on a terminal: one bar per slot of the
//! job, moving through the steps of a blue/green replacement (waiting,
//! new instance starting, new instance ready beside the old one, done),
//! under a summary line. Derived from the instance records alone, so it
//! shows the same whichever node the CLI talks to.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use myco_proto::jobs_api::{InstanceInfo, JobInfo};

/// Where one slot is in its replacement; the bar's position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// No instance of the new version yet.
    Waiting = 0,
    /// The new instance is launching (or restarting after a failure).
    Starting = 1,
    /// The new instance is ready; an old one still serves or drains.
    Replacing = 2,
    /// Only the new version serves this slot.
    Done = 3,
}

/// One slot's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The slot number.
    pub slot: u32,
    /// Its step.
    pub step: Step,
    /// What is happening, in words ("v3 ready on n2, v2 draining on n1").
    pub text: String,
}

/// The slots `0..desired` of `job` and where each is.
pub fn slots(job: &JobInfo, instances: &[InstanceInfo]) -> Vec<SlotView> {
    (0..job.desired)
        .map(|slot| {
            let mine: Vec<&InstanceInfo> = instances.iter().filter(|i| i.slot == slot).collect();
            let new = mine
                .iter()
                .filter(|i| i.version == job.version && i.state != "stopped")
                .min_by_key(|i| state_rank(&i.state));
            let old: Vec<&&InstanceInfo> = mine
                .iter()
                .filter(|i| {
                    i.version != job.version && matches!(i.state.as_str(), "ready" | "draining")
                })
                .collect();
            let step = match new.map(|i| i.state.as_str()) {
                Some("ready") if old.is_empty() => Step::Done,
                Some("ready") => Step::Replacing,
                Some(_) => Step::Starting,
                None => Step::Waiting,
            };
            let mut parts = Vec::new();
            match new {
                Some(i) if i.state == "failed" => parts.push(format!(
                    "v{} failed on {} ({} restarts): {}",
                    i.version, i.node_name, i.restarts, i.reason
                )),
                Some(i) => parts.push(format!("v{} {} on {}", i.version, i.state, i.node_name)),
                None => parts.push(format!("v{} waiting", job.version)),
            }
            parts.extend(
                old.iter()
                    .map(|i| format!("v{} {} on {}", i.version, i.state, i.node_name)),
            );
            SlotView {
                slot,
                step,
                text: parts.join(", "),
            }
        })
        .collect()
}

/// Ready first, so a slot with a ready and a restarting copy reads ready.
fn state_rank(state: &str) -> u8 {
    match state {
        "ready" => 0,
        "launching" => 1,
        "draining" => 2,
        _ => 3,
    }
}

/// The bars on the terminal: a summary line and one bar per slot.
pub struct SlotBars {
    multi: MultiProgress,
    summary: ProgressBar,
    bars: Vec<ProgressBar>,
}

impl SlotBars {
    /// Bars drawn on stdout.
    pub fn new() -> SlotBars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let summary = multi.add(ProgressBar::new_spinner());
        summary
            .set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
        SlotBars {
            multi,
            summary,
            bars: Vec::new(),
        }
    }

    /// Redraws with the latest summary and slots.
    pub fn update(&mut self, summary: &str, slots: &[SlotView]) {
        self.summary.set_message(summary.to_string());
        self.summary.tick();
        while self.bars.len() < slots.len() {
            let bar = self.multi.add(ProgressBar::new(Step::Done as u64));
            bar.set_style(
                ProgressStyle::with_template("  {prefix:>8} [{bar:12}] {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("slot {}", self.bars.len()));
            self.bars.push(bar);
        }
        for (bar, slot) in self.bars.iter().zip(slots) {
            bar.set_position(slot.step as u64);
            bar.set_message(slot.text.clone());
        }
    }

    /// Leaves the last picture on the terminal.
    pub fn finish(&self) {
        for bar in &self.bars {
            bar.abandon();
        }
        self.summary.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(slot: u32, version: u64, state: &str, node: &str) -> InstanceInfo {
        InstanceInfo {
            id: format!("web-{slot}-v{version}-{node}"),
            job: "web".into(),
            node: node.into(),
            node_name: node.into(),
            node_state: "alive".into(),
            state: state.into(),
            addr: String::new(),
            digest: String::new(),
            restarts: 0,
            reason: String::new(),
            version,
            slot,
            last_exit: None,
            since_ms: 0,
        }
    }

    fn job(version: u64, desired: u32) -> JobInfo {
        let spec = myco_proto::job::JobSpec::from_json(br#"{"name":"web","spore":"a@1"}"#).unwrap();
        let mut j: JobInfo = serde_json::from_value(serde_json::json!({
            "name": "web", "version": version, "spore": "", "spore_ref": "", "stopped": false,
            "desired": desired, "count": desired, "running": 0, "ready": 0, "pending": [],
            "created_ms": 0, "updated_ms": 0, "spec": serde_json::to_value(&spec).unwrap(),
        }))
        .unwrap();
        j.version = version;
        j
    }

    #[test]
    fn each_slot_shows_its_step_of_the_replacement() {
        let s = slots(
            &job(3, 4),
            &[
                // slot 0: replaced
                instance(0, 3, "ready", "n1"),
                // slot 1: new ready beside the old, which drains
                instance(1, 3, "ready", "n2"),
                instance(1, 2, "draining", "n1"),
                // slot 2: new launching, old serving
                instance(2, 3, "launching", "n3"),
                instance(2, 2, "ready", "n3"),
                // slot 3: not started; a stopped old copy does not count
                instance(3, 2, "ready", "n2"),
                instance(3, 1, "stopped", "n2"),
            ],
        );
        let steps: Vec<Step> = s.iter().map(|v| v.step).collect();
        assert_eq!(
            steps,
            [Step::Done, Step::Replacing, Step::Starting, Step::Waiting]
        );
        assert_eq!(s[1].text, "v3 ready on n2, v2 draining on n1");
        assert_eq!(s[3].text, "v3 waiting, v2 ready on n2");
    }

    #[test]
    fn a_failing_new_instance_says_why() {
        let mut bad = instance(0, 2, "failed", "n1");
        bad.restarts = 2;
        bad.reason = "exit code 3".into();
        let s = slots(&job(2, 1), &[bad, instance(0, 1, "ready", "n2")]);
        assert_eq!(s[0].step, Step::Starting);
        assert_eq!(
            s[0].text,
            "v2 failed on n1 (2 restarts): exit code 3, v1 ready on n2"
        );
    }
}
