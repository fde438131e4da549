//! The ledger's intake: usage events published to the bus first, then taken in by
//! billing's consumer (batches, one transaction each), timed from the consumer's start
//! until the last entry is in: events/s, on the local log with SQLite, and on Kafka
//! with PostgreSQL when SOMAGENT_TEST_{EVENTS,DATABASE}_URL are set.

use std::time::{Duration, Instant};

use serde_json::json;
use somagent_billing::intake;
use somagent_billing::ledger::{Ledger, UsageQuery};
use somagent_common::config::{DatabaseUrl, EventsUrl};
use somagent_common::infra::db::Db;
use somagent_common::infra::events::{ConsumeOptions, Envelope, EventBus, topics};
use somagent_common::tenant::TenantId;
use tokio_util::sync::CancellationToken;

/// Publishes in flight at once while the bus is filled.
const PUBLISHERS: usize = 256;

pub async fn run(events: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let local = EventBus::connect(&EventsUrl::Local { path: None }, dir.path()).await?;
    let sqlite = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "billing",
    )
    .await?;
    measure("local log + SQLite", &local, sqlite, events).await?;
    match (
        std::env::var("SOMAGENT_TEST_EVENTS_URL"),
        std::env::var("SOMAGENT_TEST_DATABASE_URL"),
    ) {
        (Ok(kafka), Ok(postgres)) => {
            let run = uuid::Uuid::new_v4().simple().to_string();
            let bus = EventBus::connect(
                &format!("{kafka}?prefix=bench{}.", &run[..8])
                    .parse::<EventsUrl>()
                    .map_err(anyhow::Error::msg)?,
                dir.path(),
            )
            .await?;
            let db = Db::postgres(&postgres, &format!("bench_billing_{}", &run[..8])).await?;
            measure("Kafka + PostgreSQL", &bus, db, events).await?;
        }
        _ => println!(
            "kafka+postgres   not measured: set SOMAGENT_TEST_EVENTS_URL and SOMAGENT_TEST_DATABASE_URL"
        ),
    }
    Ok(())
}

async fn measure(name: &str, bus: &EventBus, db: Db, events: usize) -> anyhow::Result<()> {
    db.migrate("billing", somagent_billing::MIGRATIONS).await?;
    let ledger = Ledger::new(db);
    let tenant = TenantId::parse("bench").map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let mut expected = 0i64;
    let mut batch = Vec::with_capacity(PUBLISHERS);
    for i in 0..events {
        let (prompt, completion) = (100 + (i % 900) as i64, (i % 300) as i64);
        let cost = (prompt * 150 + 999) / 1000 + (completion * 600 + 999) / 1000;
        expected += cost;
        batch.push(Envelope::new(
            "slm.usage",
            "bench",
            tenant.clone(),
            json!({"kind": "model", "call_id": format!("call-{i}"), "user": format!("user-{}", i % 50),
                   "profile": "default", "model": "m", "prompt_tokens": prompt, "completion_tokens": completion,
                   "prompt_price_micros_per_1k": 150, "completion_price_micros_per_1k": 600,
                   "cost_micros": cost, "currency": "USD"}),
        ));
        // Published by many at once, as services do: the bus groups their writes.
        if batch.len() == PUBLISHERS || i + 1 == events {
            let sent = futures::future::join_all(
                batch
                    .iter()
                    .map(|e| bus.publish(topics::BILLING_USAGE, tenant.as_str(), e)),
            )
            .await;
            sent.into_iter().collect::<Result<Vec<_>, _>>()?;
            batch.clear();
        }
    }
    let published = started.elapsed();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let consumer = intake::consumer(bus, ledger.clone(), ConsumeOptions::new(stop.clone())).await?;
    let task = tokio::spawn(consumer);
    let now = somagent_common::clock::unix_now_ms();
    let query = UsageQuery {
        from_ms: now - 3_600_000,
        to_ms: now + 3_600_000,
        ..Default::default()
    };
    let (calls, cost) = loop {
        let (_, totals) = ledger.usage(&tenant, &query).await?;
        let (calls, cost) = totals.first().map_or((0, 0), |t| (t.calls, t.cost_micros));
        if calls as usize >= events {
            break (calls, cost);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{name}: {calls} of {events} entered after 10 minutes"
        );
        // Checked seldom: each check sums the whole ledger.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = started.elapsed();
    stop.cancel();
    let _ = task.await;
    anyhow::ensure!(
        cost == expected,
        "{name}: the ledger holds {cost}, not {expected}"
    );
    println!(
        "{name:<22} {calls} usage events entered in {:.2} s: {:.0} events/s (published first in {:.2} s); ledger total {cost} micro-units, exact",
        took.as_secs_f64(),
        calls as f64 / took.as_secs_f64(),
        published.as_secs_f64()
    );
    Ok(())
}
