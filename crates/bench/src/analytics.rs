//! The analytics warehouse: events mapped to rows and stored in the consumer's batches
//! (events/s), then a usage report (a month, by model and day, for one of ten tenants)
//! over `--events` events: p50/p99. On the embedded warehouse (SQLite) and on
//! ClickHouse when SOMAGENT_TEST_ANALYTICS_URL is set.

use std::time::{Duration, Instant};

use serde_json::json;
use somagent_analytics::domain::period::Period;
use somagent_analytics::domain::rows::rows_of;
use somagent_analytics::reports;
use somagent_analytics::warehouse::Warehouse;
use somagent_common::config::{AnalyticsUrl, DatabaseUrl};
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::tenant::TenantId;

use crate::stats::Samples;

const TENANTS: usize = 10;
const DAY: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z: the month the events fall in.
const START: i64 = 1_793_491_200_000;
const BATCH: usize = somagent_analytics::intake::BATCH;

pub async fn run(events: usize, queries: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "analytics",
    )
    .await?;
    db.migrate("common", COMMON_MIGRATIONS).await?;
    db.migrate("analytics", somagent_analytics::MIGRATIONS)
        .await?;
    let local = somagent_analytics::open_warehouse(&AnalyticsUrl::Local, db.clone()).await?;
    measure("embedded (SQLite)", &local, events, queries).await?;
    match std::env::var("SOMAGENT_TEST_ANALYTICS_URL") {
        Ok(url) => {
            let mut parsed = url::Url::parse(&url)?;
            parsed.set_path(&format!(
                "/bench_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ));
            let ch: AnalyticsUrl = parsed.as_str().parse().map_err(anyhow::Error::msg)?;
            let warehouse = somagent_analytics::open_warehouse(&ch, db).await?;
            measure("ClickHouse 18.16", &warehouse, events, queries).await?;
        }
        Err(_) => println!("clickhouse       not measured: set SOMAGENT_TEST_ANALYTICS_URL"),
    }
    Ok(())
}

/// A model call of tenant `i % 10`, spread over the month.
fn event(i: usize) -> Envelope {
    let tenant = TenantId::parse(format!("bench{}", i % TENANTS)).expect("a tenant id");
    let profile = ["default", "fast", "large"][i % 3];
    let mut e = Envelope::new(
        "slm.usage",
        "slm",
        tenant,
        json!({"kind": "model", "call_id": format!("c{i}"), "user": format!("u{}", i % 37),
               "profile": profile, "upstream": "openai", "model": "m",
               "prompt_tokens": 100 + i % 50, "completion_tokens": 200 + i % 70,
               "cost_micros": 1500 + (i % 11) as i64, "currency": "USD", "latency_ms": 300 + i % 900}),
    );
    let at = START + (i as i64 * 7919) % (30 * DAY);
    e.time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at) * 1_000_000)
        .expect("a time");
    e
}

async fn measure(
    name: &str,
    warehouse: &Warehouse,
    events: usize,
    queries: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut i = 0;
    while i < events {
        let n = BATCH.min(events - i);
        let rows: Vec<_> = (i..i + n)
            .flat_map(|k| rows_of(topics::BILLING_USAGE, &event(k)))
            .collect();
        warehouse.insert(&rows).await?;
        i += n;
    }
    let took = started.elapsed();
    println!(
        "{name:<18} ingest   {events} events in {:.1} s: {:.0} events/s (batches of {BATCH}, each event a row of events and of usage)",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64()
    );
    let month = Period::new(START, START + 30 * DAY).map_err(|e| anyhow::anyhow!(e.message))?;
    let mut samples: Vec<Duration> = Vec::with_capacity(queries);
    let mut calls = 0;
    for q in 0..queries {
        let tenant = format!("bench{}", q % TENANTS);
        let t = Instant::now();
        let report = reports::usage(warehouse, &tenant, &month, Some(DAY), &["model".into()])
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        samples.push(t.elapsed());
        calls = report["lines"].as_array().map_or(0, |l| {
            l.iter().map(|x| x["calls"].as_i64().unwrap_or(0)).sum()
        });
    }
    let samples = Samples::new(samples);
    println!(
        "{name:<18} usage by model and day, a month of one tenant ({calls} calls of {events}): {}",
        samples.summary()
    );
    Ok(())
}
