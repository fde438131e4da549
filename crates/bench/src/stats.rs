//! Latency samples and how they are printed.

use std::time::Duration;

pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.0.len() - 1) as f64).round() as usize;
        self.0[rank.min(self.0.len() - 1)]
    }

    /// `p50 … p99 … max …` in the unit that reads best.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:>9}  p99 {:>9}  max {:>9}",
            human(self.percentile(50.0)),
            human(self.percentile(99.0)),
            human(self.percentile(100.0))
        )
    }
}

pub fn human(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{:.2} ms", micros / 1000.0)
    }
}

/// Peak resident memory of this process so far, from /proc.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The bootstrap admin's access token on the platform behind `gateway`.
pub async fn admin_token(
    client: &reqwest::Client,
    gateway: &str,
    password: &str,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let login: serde_json::Value = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "default"),
            ("username", "admin"),
            ("password", password),
        ])
        .send()
        .await?
        .error_for_status()
        .context("login")?
        .json()
        .await?;
    Ok(login["access_token"]
        .as_str()
        .context("an access token")?
        .to_owned())
}

/// Opens `n` sessions of `model` on the platform behind `gateway`; their ids.
pub async fn open_sessions(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    model: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let created: serde_json::Value = client
            .post(format!("{gateway}/v1/sessions"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "model": model }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        sessions.push(
            created["session_id"]
                .as_str()
                .context("a session id")?
                .to_owned(),
        );
    }
    Ok(sessions)
}
