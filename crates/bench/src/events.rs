//! Publish throughput and latency per event bus, lock latency per cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use somagent_common::config::{CacheUrl, EventsUrl};
use somagent_common::infra::cache::Cache;
use somagent_common::infra::events::{Envelope, EventBus};
use somagent_common::tenant::TenantId;

use crate::stats::{Samples, peak_rss_mib};

pub async fn run(events: usize, publishers: usize, locks: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut buses = vec![(
        "local log",
        EventBus::connect(&EventsUrl::Local { path: None }, dir.path()).await?,
    )];
    if let Ok(url) = std::env::var("SOMAGENT_TEST_EVENTS_URL") {
        // The URL may carry options of its own (`?linger_ms=0`).
        let join = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{join}prefix=bench-{}.", uuid::Uuid::new_v4().simple());
        let url: EventsUrl = url.parse().map_err(anyhow::Error::msg)?;
        buses.push((
            "kafka",
            EventBus::connect(&url, dir.path()).await.context("kafka")?,
        ));
    } else {
        println!("(SOMAGENT_TEST_EVENTS_URL unset: Kafka not measured)");
    }
    println!("== event publish ({events} events of ~300 bytes, acknowledged as durable)");
    for (name, bus) in &buses {
        // Warm up: the first batches on a fresh broker or file are not representative.
        publish_concurrently(bus, events.min(5_000), publishers).await?;
        let sequential = publish_sequentially(bus, events.min(5_000)).await?;
        println!("{name:<10} 1 publisher      {}", sequential.summary());
        let (elapsed, latencies) = publish_concurrently(bus, events, publishers).await?;
        println!(
            "{name:<10} {publishers} publishers    {}  throughput {:>8.0} events/s",
            latencies.summary(),
            events as f64 / elapsed.as_secs_f64()
        );
    }

    let mut caches = vec![("in-process", Cache::connect(&CacheUrl::Memory).await?)];
    if let Ok(url) = std::env::var("SOMAGENT_TEST_CACHE_URL") {
        let url: CacheUrl = url.parse().map_err(anyhow::Error::msg)?;
        caches.push(("redis", Cache::connect(&url).await.context("redis")?));
    } else {
        println!("(SOMAGENT_TEST_CACHE_URL unset: Redis not measured)");
    }
    println!("== lock acquire ({locks} acquire + release, uncontended)");
    for (name, cache) in &caches {
        let lock_name = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let mut samples = Vec::with_capacity(locks);
        for _ in 0..locks {
            let started = Instant::now();
            let lock = cache
                .try_lock(&lock_name, Duration::from_secs(5))
                .await?
                .context("the lock was free")?;
            samples.push(started.elapsed());
            cache.unlock(&lock).await?;
        }
        println!(
            "{name:<10} acquire          {}",
            Samples::new(samples).summary()
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS {rss:.0} MiB");
    }
    Ok(())
}

fn event(n: usize) -> Envelope {
    Envelope::new(
        "bench.event",
        "bench",
        TenantId::parse("bench").expect("valid tenant"),
        serde_json::json!({ "n": n, "model": "bench-model", "prompt_tokens": 123, "completion_tokens": 456 }),
    )
}

async fn publish_sequentially(bus: &EventBus, count: usize) -> anyhow::Result<Samples> {
    let mut samples = Vec::with_capacity(count);
    for n in 0..count {
        let e = event(n);
        let started = Instant::now();
        bus.publish("bench.events", "bench", &e).await?;
        samples.push(started.elapsed());
    }
    Ok(Samples::new(samples))
}

async fn publish_concurrently(
    bus: &EventBus,
    count: usize,
    publishers: usize,
) -> anyhow::Result<(Duration, Samples)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (bus, next) = (bus.clone(), next.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let key = format!("key-{p}");
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let e = event(p);
                    let t = Instant::now();
                    bus.publish("bench.events", &key, &e).await?;
                    samples.push(t.elapsed());
                }
                anyhow::Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed();
    Ok((elapsed, Samples::new(all)))
}
