//! Validation of a job spec: every error names the field and the problem,
//! so the CLI and the API can show it as one line.

use std::collections::BTreeSet;

use super::{JobSpec, Probe};

/// A job spec could not be read or is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobSpecError {
    /// A field has a value outside what Myco accepts; `field` is its path
    /// (`resources.memory_mb`, `env.PORT`), `problem` says what to change.
    #[error("{field}: {problem}")]
    Invalid {
        /// The dotted path of the field.
        field: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// The job file is not valid TOML for a job (syntax, wrong type or an
    /// unknown field); the message gives the line.
    #[error("job file: {0}")]
    Toml(String),
    /// The API body is not valid JSON for a job (syntax, wrong type or an
    /// unknown field).
    #[error("job body: {0}")]
    Json(String),
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> JobSpecError {
    JobSpecError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Limits on a job spec. Bounded so a job record stays small enough to
/// replicate cheaply and a bad spec cannot ask for the impossible.
pub(crate) mod limits {
    /// Most slots per job.
    pub const MAX_COUNT: u32 = 1000;
    /// Most environment variables.
    pub const MAX_ENV: usize = 64;
    /// Longest environment value, in bytes.
    pub const MAX_ENV_VALUE: usize = 4096;
    /// Most constraints.
    pub const MAX_CONSTRAINTS: usize = 16;
    /// Most volumes.
    pub const MAX_VOLUMES: usize = 16;
    /// Longest tag key or value (as in the node manifest).
    pub const MAX_TAG: usize = 63;
    /// Most arguments of an exec health check.
    pub const MAX_EXEC_ARGS: usize = 64;
    /// Longest string elsewhere (paths, arguments), in bytes.
    pub const MAX_TEXT: usize = 1024;
    /// Largest spec, encoded: a job record must stay well inside the
    /// replicated value limit (64 KiB), history included.
    pub const MAX_ENCODED: usize = 32 * 1024;
}

/// A spore reference as a job gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SporeRef<'a> {
    /// A content digest, `sha256:<64 lowercase hex>`.
    Digest(&'a str),
    /// A published name and version, resolved to a digest at deploy time.
    Named {
        /// The spore's name.
        name: &'a str,
        /// Its version.
        version: &'a str,
    },
}

impl<'a> SporeRef<'a> {
    /// Reads `sha256:<hex>` or `NAME@VERSION`.
    pub fn parse(s: &'a str) -> Result<SporeRef<'a>, JobSpecError> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Ok(SporeRef::Digest(s));
            }
            return Err(invalid(
                "spore",
                "a digest is sha256: and 64 lowercase hex digits",
            ));
        }
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 128
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
        };
        match s.split_once('@') {
            Some((name, version)) if ok(name) && ok(version) => {
                Ok(SporeRef::Named { name, version })
            }
            _ => Err(invalid(
                "spore",
                "give sha256:<hex> or NAME@VERSION (letters, digits, - _ . +)",
            )),
        }
    }
}

/// Whether `s` is a valid job or volume name: `[a-z0-9-]`, 1 to 63
/// characters, not starting or ending with `-` (a DNS label).
pub fn is_valid_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), JobSpecError> {
    if v < lo || v > hi {
        return Err(invalid(field, format!("must be {lo}..={hi}, got {v}")));
    }
    Ok(())
}

fn text(field: &str, v: &str) -> Result<(), JobSpecError> {
    if v.len() > limits::MAX_TEXT || v.contains('\0') {
        return Err(invalid(
            field,
            format!("at most {} bytes, no NUL", limits::MAX_TEXT),
        ));
    }
    Ok(())
}

impl JobSpec {
    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), JobSpecError> {
        use limits::*;
        if !is_valid_name(&self.name) {
            return Err(invalid(
                "name",
                "only [a-z0-9-], 1..=63 chars, not starting or ending with '-'",
            ));
        }
        SporeRef::parse(&self.spore)?;
        range("count", self.count, 1, MAX_COUNT)?;
        self.validate_env()?;
        let r = &self.resources;
        range("resources.cpu_milli", r.cpu_milli, 1, 1_024_000)?;
        // No upper bound but the type's: a job bigger than every node is
        // valid (nodes can be added); it stays pending with the reason.
        range("resources.memory_mb", r.memory_mb, 1, u32::MAX)?;
        range("resources.pids", r.pids, 1, 4_194_304)?;
        // QEMU's own limit for x86 machines is 255 (288 with x2apic).
        range("resources.vcpus", r.vcpus, 1, 255)?;
        if self.constraints.len() > MAX_CONSTRAINTS {
            return Err(invalid("constraints", format!("at most {MAX_CONSTRAINTS}")));
        }
        for (key, c) in &self.constraints {
            let field = format!("constraints.{key}");
            if key.is_empty() || key.len() > MAX_TAG {
                return Err(invalid(field, format!("tag keys are 1..={MAX_TAG} bytes")));
            }
            let values = c.values();
            if values.is_empty() {
                return Err(invalid(field, "an empty list matches no node"));
            }
            if values.iter().any(|v| v.len() > MAX_TAG) {
                return Err(invalid(
                    field,
                    format!("tag values are at most {MAX_TAG} bytes"),
                ));
            }
        }
        if let Some(h) = &self.health {
            self.validate_health(h)?;
        }
        let u = &self.update;
        range("update.max_parallel", u.max_parallel, 1, MAX_COUNT)?;
        range("update.min_healthy_ms", u.min_healthy_ms, 0, 3_600_000)?;
        range(
            "update.healthy_deadline_ms",
            u.healthy_deadline_ms,
            1_000,
            86_400_000,
        )?;
        if u.min_healthy_ms >= u.healthy_deadline_ms {
            return Err(invalid(
                "update.min_healthy_ms",
                "must be below update.healthy_deadline_ms",
            ));
        }
        let p = &self.restart;
        range("restart.attempts", p.attempts, 0, 100)?;
        range("restart.interval_ms", p.interval_ms, 1_000, 86_400_000)?;
        range("restart.delay_ms", p.delay_ms, 0, 3_600_000)?;
        range(
            "restart.max_delay_ms",
            p.max_delay_ms,
            p.delay_ms,
            3_600_000,
        )
        .map_err(|_| invalid("restart.max_delay_ms", "must be restart.delay_ms..=3600000"))?;
        range("restart.backoff", p.backoff, 1, 10)?;
        range("restart.jitter_percent", p.jitter_percent, 0, 100)?;
        range("restart.avoid_ms", p.avoid_ms, 0, 86_400_000)?;
        range("kill_timeout_ms", self.kill_timeout_ms, 0, 600_000)?;
        self.validate_volumes()?;
        let size = postcard::to_stdvec(self).map_or(usize::MAX, |v| v.len());
        if size > MAX_ENCODED {
            return Err(invalid(
                "env",
                format!(
                    "the job is {size} bytes encoded, at most {MAX_ENCODED}: shorten env values"
                ),
            ));
        }
        Ok(())
    }

    fn validate_env(&self) -> Result<(), JobSpecError> {
        use limits::*;
        if self.env.len() > MAX_ENV {
            return Err(invalid("env", format!("at most {MAX_ENV} variables")));
        }
        for (k, v) in &self.env {
            let field = format!("env.{k}");
            let name_ok = k.len() <= 128
                && k.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !name_ok {
                return Err(invalid(
                    field,
                    "names are [A-Za-z_][A-Za-z0-9_]*, at most 128",
                ));
            }
            if k == "PORT" || k.starts_with("MYCO_") {
                return Err(invalid(field, "PORT and MYCO_* are set by Myco"));
            }
            if v.len() > MAX_ENV_VALUE || v.contains('\0') {
                return Err(invalid(
                    field,
                    format!("at most {MAX_ENV_VALUE} bytes, no NUL"),
                ));
            }
        }
        Ok(())
    }

    fn validate_health(&self, h: &super::Health) -> Result<(), JobSpecError> {
        match h.probe() {
            None => {
                return Err(invalid(
                    "health",
                    "give exactly one of http, tcp = true, exec",
                ));
            }
            Some(Probe::Http(path)) => {
                text("health.http", path)?;
                if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        "health.http",
                        "a path starting with '/', no spaces",
                    ));
                }
            }
            Some(Probe::Exec(cmd)) => {
                if cmd.is_empty() || cmd.len() > limits::MAX_EXEC_ARGS || cmd[0].is_empty() {
                    return Err(invalid(
                        "health.exec",
                        format!(
                            "a command and up to {} arguments",
                            limits::MAX_EXEC_ARGS - 1
                        ),
                    ));
                }
                for arg in cmd {
                    text("health.exec", arg)?;
                }
            }
            Some(Probe::Tcp) => {}
        }
        range("health.interval_ms", h.interval_ms, 100, 3_600_000)?;
        // A timeout longer than the interval is fine: the next probe is
        // scheduled after the previous one answers, so probes never pile up.
        range("health.timeout_ms", h.timeout_ms, 10, 600_000)?;
        range("health.healthy_threshold", h.healthy_threshold, 1, 100)?;
        range("health.unhealthy_threshold", h.unhealthy_threshold, 1, 100)
    }

    fn validate_volumes(&self) -> Result<(), JobSpecError> {
        if self.volumes.len() > limits::MAX_VOLUMES {
            return Err(invalid(
                "volumes",
                format!("at most {}", limits::MAX_VOLUMES),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            if !is_valid_name(&v.name) {
                return Err(invalid(
                    format!("volumes[{i}].name"),
                    "only [a-z0-9-], 1..=63 chars",
                ));
            }
            if !seen.insert(&v.name) {
                return Err(invalid(format!("volumes[{i}].name"), "used twice"));
            }
            let field = format!("volumes[{i}].path");
            text(&field, &v.path)?;
            let bad = v.path.is_empty()
                || v.path.starts_with('/')
                || v.path.split('/').any(|c| c == ".." || c == ".");
            if bad {
                return Err(invalid(
                    field,
                    "a relative path inside the instance directory, without . or ..",
                ));
            }
        }
        Ok(())
    }
}
