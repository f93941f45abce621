//! Jobs, instances and logs: `/v1/jobs...`, `/v1/instances`, `/v1/logs`.

use std::io::Read;

use myco_proto::job::JobSpec;
use myco_proto::jobs_api::{
    Deployed, InstanceInfo, JobInfo, JobVersionInfo, PlanInfo, RevertRequest, ScaleRequest,
};
use ureq::http::Method;

use crate::client::Body;
use crate::{Client, Result, segment};

impl Client {
    /// `POST /v1/jobs`: creates or updates a job. Needs the token.
    pub fn job_deploy(&self, spec: &JobSpec) -> Result<Deployed> {
        self.post("/v1/jobs", spec)
    }

    /// `POST /v1/jobs` with a body as it is (JSON of the job file's schema).
    pub fn job_deploy_json(&self, json: &[u8]) -> Result<Deployed> {
        let answer = self.call(Method::POST, "/v1/jobs", Body::Bytes(json))?;
        self.decode("/v1/jobs", &answer.body)
    }

    /// `GET /v1/jobs`: every job with desired, running and ready counts;
    /// with `all`, stopped (removed) ones too.
    pub fn jobs(&self, all: bool) -> Result<Vec<JobInfo>> {
        self.get(if all { "/v1/jobs?all=true" } else { "/v1/jobs" })
    }

    /// `GET /v1/jobs/{name}`.
    pub fn job(&self, name: &str) -> Result<JobInfo> {
        self.get(&format!("/v1/jobs/{}", segment(name)))
    }

    /// `DELETE /v1/jobs/{name}`: stops the job. Needs the token.
    pub fn job_stop(&self, name: &str) -> Result<Deployed> {
        self.delete(&format!("/v1/jobs/{}", segment(name)))
    }

    /// `POST /v1/jobs/{name}/scale`. Needs the token.
    pub fn job_scale(&self, name: &str, count: u32) -> Result<Deployed> {
        self.post(
            &format!("/v1/jobs/{}/scale", segment(name)),
            &ScaleRequest { count },
        )
    }

    /// `GET /v1/jobs/{name}/versions`: the history, oldest first.
    pub fn job_versions(&self, name: &str) -> Result<Vec<JobVersionInfo>> {
        self.get(&format!("/v1/jobs/{}/versions", segment(name)))
    }

    /// `POST /v1/jobs/{name}/restart`: a rolling restart, the same spec as
    /// a new version.
    pub fn job_restart(&self, name: &str) -> Result<Deployed> {
        self.post(
            &format!("/v1/jobs/{}/restart", segment(name)),
            &serde_json::json!({}),
        )
    }

    /// `POST /v1/jobs/{name}/revert`: brings back `version` (default: the
    /// one before the current) as a new version. Needs the token.
    pub fn job_revert(&self, name: &str, version: Option<u64>) -> Result<Deployed> {
        self.post(
            &format!("/v1/jobs/{}/revert", segment(name)),
            &RevertRequest { version },
        )
    }

    /// `POST /v1/jobs/plan`: where each slot would go and why; changes
    /// nothing. Needs the token (it is a POST).
    pub fn job_plan(&self, spec: &JobSpec) -> Result<PlanInfo> {
        self.post("/v1/jobs/plan", spec)
    }

    /// `GET /v1/instances[?job=NAME]`: instances on nodes that are up.
    pub fn instances(&self, job: Option<&str>) -> Result<Vec<InstanceInfo>> {
        match job {
            Some(j) => self.get(&format!("/v1/instances?job={}", segment(j))),
            None => self.get("/v1/instances"),
        }
    }

    /// `GET /v1/logs/{job}[?instance=ID&follow=true&tail=N]`: an instance's
    /// output as a stream of bytes. Without `follow` it ends when the log
    /// is sent; with it, it stays open (bounded by the stream idle limit).
    pub fn logs(
        &self,
        job: &str,
        instance: Option<&str>,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<Box<dyn Read + Send>> {
        let mut path = format!("/v1/logs/{}", segment(job));
        let mut query = Vec::new();
        if let Some(i) = instance {
            query.push(format!("instance={}", segment(i)));
        }
        if follow {
            query.push("follow=true".into());
        }
        if let Some(n) = tail {
            query.push(format!("tail={n}"));
        }
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query.join("&"));
        }
        self.stream(&path)
    }
}
