//! The gateway as a proxy for streamed completions, against a floor measured in the
//! same run: a fixed local upstream (32 chunks 5 ms apart, the scripted server's
//! `rules` model) called directly and then through the gateway, at 1, 16 and 64
//! connections. Prints the time to first token the platform adds (p50/p99),
//! throughput against direct, the platform process's CPU per proxied completion (less
//! what it spends idle, measured while the floor runs) and its resident memory.

use std::time::{Duration, Instant};

use crate::chat::first_token;
use crate::stats::{Samples, human};

/// The upstream's answer: 32 words, each its own chunk (the first starts with `E`,
/// which is what `first_token` waits for).
const ANSWER: &str = "Every owl hunts at night and sees well in the dark because its eyes are large \
     and its hearing is sharp enough to find mice under snow without any light at all";
/// Linux reports process CPU time in ticks of 1/100 s to user space (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// What one load run measured.
struct Run {
    first_tokens: Samples,
    completions: usize,
    elapsed: Duration,
    /// CPU the platform process used during the run.
    cpu: Option<Duration>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.completions as f64 / self.elapsed.as_secs_f64()
    }
}

pub async fn run(
    gateway: &str,
    password: &str,
    platform: Option<u32>,
    seconds: u64,
    connection_counts: &[usize],
) -> anyhow::Result<()> {
    let llm = somagent_scripted_llm::ScriptedLlm::start_on(
        &std::env::var("SOMAGENT_BENCH_LLM_ADDR").unwrap_or_else(|_| "127.0.0.1:20999".into()),
    )
    .await?;
    llm.on_slowly("", &[ANSWER], Some(Duration::from_millis(5)));
    let direct = format!("{}/chat/completions", llm.base_url());
    let through = format!("{gateway}/v1/chat/completions");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let token = crate::stats::admin_token(&client, gateway, password).await?;
    // Warm both paths (connections, the model profile, the tenant's caches).
    first_token(&client, &direct, None, "rules", "warm up").await?;
    first_token(&client, &through, Some(&token), "default", "warm up").await?;

    println!(
        "== streamed completion, 32 chunks 5 ms apart, direct then through the gateway, {seconds} s each"
    );
    println!(
        "{:>5}  {:>21}  {:>21}  {:>21}  {:>17}  {:>7}  {:>12}  {:>8}",
        "conns",
        "direct TTFT p50/p99",
        "gateway TTFT p50/p99",
        "added p50/p99",
        "req/s direct/gw",
        "ratio",
        "CPU/request",
        "RSS"
    );
    for &connections in connection_counts {
        // The platform idles while the floor is measured: what it spends then is its
        // background (timers, pollers), taken off what the proxied run spent.
        let floor = load(
            &client,
            &direct,
            None,
            "rules",
            connections,
            seconds,
            platform,
        )
        .await?;
        let proxied = load(
            &client,
            &through,
            Some(&token),
            "default",
            connections,
            seconds,
            platform,
        )
        .await?;
        let pair = |a: Duration, b: Duration| format!("{} / {}", human(a), human(b));
        let added = |p: f64| {
            proxied
                .first_tokens
                .percentile(p)
                .saturating_sub(floor.first_tokens.percentile(p))
        };
        let cpu = proxied
            .cpu
            .zip(floor.cpu)
            .map(|(busy, idle)| {
                let background =
                    idle.mul_f64(proxied.elapsed.as_secs_f64() / floor.elapsed.as_secs_f64());
                human(
                    busy.saturating_sub(background)
                        / u32::try_from(proxied.completions.max(1)).unwrap_or(u32::MAX),
                )
            })
            .unwrap_or_else(|| "-".into());
        let rss = platform
            .and_then(resident_mib)
            .map(|mib| format!("{mib:.0} MiB"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{connections:>5}  {:>21}  {:>21}  {:>21}  {:>17}  {:>7.2}  {cpu:>12}  {rss:>8}",
            pair(
                floor.first_tokens.percentile(50.0),
                floor.first_tokens.percentile(99.0)
            ),
            pair(
                proxied.first_tokens.percentile(50.0),
                proxied.first_tokens.percentile(99.0)
            ),
            pair(added(50.0), added(99.0)),
            format!("{:.0} / {:.0}", floor.per_second(), proxied.per_second()),
            proxied.per_second() / floor.per_second(),
        );
    }
    Ok(())
}

/// `connections` callers asking one after another for `seconds`.
async fn load(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    model: &str,
    connections: usize,
    seconds: u64,
    platform: Option<u32>,
) -> anyhow::Result<Run> {
    let cpu_before = platform.and_then(cpu_time);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let callers = (0..connections).map(|caller| async move {
        let mut first_tokens = Vec::new();
        let mut n = 0usize;
        while Instant::now() < deadline {
            n += 1;
            let question = format!("question {caller}-{n}");
            first_tokens.push(first_token(client, url, token, model, &question).await?.0);
        }
        anyhow::Ok(first_tokens)
    });
    let mut all = Vec::new();
    for first_tokens in futures::future::join_all(callers).await {
        all.extend(first_tokens?);
    }
    let elapsed = started.elapsed();
    let cpu = platform
        .and_then(cpu_time)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok(Run {
        completions: all.len(),
        first_tokens: Samples::new(all),
        elapsed,
        cpu,
    })
}

/// User and system CPU time of process `pid` so far, from /proc.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) are space-separated;
    // utime and stime are the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ticks / TICKS_PER_SECOND))
}

/// Resident memory of process `pid`, from /proc.
fn resident_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
