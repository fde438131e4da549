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

/// Budget reservations: one reserve and its settle after another (latency of each), on
/// the embedded store with counters in process, and on PostgreSQL with counters in
/// Redis when SOMAGENT_TEST_{DATABASE,CACHE}_URL are set; then 100 concurrent calls
/// against a budget with room for 10.
pub async fn reservations(count: usize) -> anyhow::Result<()> {
    use somagent_billing::counters::{Counters, RedisCounters};
    use somagent_common::infra::cache::{Cache, MemoryCache, RedisCache};

    let dir = tempfile::tempdir()?;
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, dir.path()).await?;
    let sqlite = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "billing",
    )
    .await?;
    let local = Cache::Memory(MemoryCache::default());
    let mut setups = vec![(
        "in process + SQLite",
        sqlite,
        Counters::Local(std::sync::Arc::default()),
        local,
    )];
    match (
        std::env::var("SOMAGENT_TEST_CACHE_URL"),
        std::env::var("SOMAGENT_TEST_DATABASE_URL"),
    ) {
        (Ok(redis), Ok(postgres)) => {
            let run = uuid::Uuid::new_v4().simple().to_string();
            let redis = RedisCache::connect(&format!("{redis}?prefix=bench{}", &run[..8])).await?;
            let db = Db::postgres(&postgres, &format!("bench_budgets_{}", &run[..8])).await?;
            setups.push((
                "Redis + PostgreSQL",
                db,
                Counters::Redis(RedisCounters::new(redis.clone())),
                Cache::Redis(redis),
            ));
        }
        _ => println!(
            "redis+postgres   not measured: set SOMAGENT_TEST_CACHE_URL and SOMAGENT_TEST_DATABASE_URL"
        ),
    }
    for (name, db, counters, cache) in setups {
        db.migrate("common", somagent_common::infra::db::COMMON_MIGRATIONS)
            .await?;
        db.migrate("billing", somagent_billing::MIGRATIONS).await?;
        let outbox = somagent_common::infra::outbox::Outbox::new(db.clone(), bus.clone());
        let budgets = somagent_billing::budgets::Budgets::new(db, counters, outbox, cache);
        reserve_and_settle(name, &budgets, count).await?;
        room_for_ten(name, &budgets).await?;
    }
    Ok(())
}

/// A tenant of its own for one measurement.
fn bench_tenant() -> anyhow::Result<TenantId> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    TenantId::parse(format!("bench-{}", &id[..8])).map_err(anyhow::Error::msg)
}

fn bench_admin(tenant: &TenantId) -> somagent_common::auth::Principal {
    use somagent_common::auth::{Capability, Principal};
    Principal {
        tenant: tenant.clone(),
        subject: "bench".into(),
        username: None,
        roles: Default::default(),
        capabilities: [Capability::TenantAdmin].into(),
        issuer: "bench".into(),
        token_id: None,
        expires_at: None,
        issued_at: None,
        actor: None,
        auth_methods: Vec::new(),
        api_key: None,
        audiences: Vec::new(),
    }
}

fn tokens_budget(
    name: &str,
    scope: &str,
    id: &str,
    limit: i64,
) -> somagent_billing::domain::budget::BudgetInput {
    somagent_billing::domain::budget::BudgetInput {
        name: name.into(),
        scope: scope.into(),
        scope_id: id.into(),
        metric: "tokens".into(),
        period: "month".into(),
        limit,
        ..Default::default()
    }
}

async fn reserve_and_settle(
    name: &str,
    budgets: &somagent_billing::budgets::Budgets,
    count: usize,
) -> anyhow::Result<()> {
    use somagent_billing::domain::budget::{CallScope, Cost};
    let tenant = bench_tenant()?;
    // A tenant budget and the user's own: each call weighs on both.
    budgets
        .put(
            &bench_admin(&tenant),
            vec![
                tokens_budget("tenant", "tenant", "", i64::MAX / 4),
                tokens_budget("user", "user", "u1", i64::MAX / 4),
            ],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let call = CallScope {
        user: "u1".into(),
        project: String::new(),
    };
    let cost = Cost {
        tokens: 1000,
        micros: 1000,
        currency: "USD".into(),
    };
    let (mut reserve, mut settle) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for _ in 0..count {
        let at = Instant::now();
        let held = budgets
            .reserve(&tenant, &call, &cost, 0)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        reserve.push(at.elapsed());
        let at = Instant::now();
        budgets
            .settle(&tenant, &held.id, 900, 900)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        settle.push(at.elapsed());
    }
    println!(
        "{name:<22} reserve (2 budgets) {}   settle (durable) {}   n={count}",
        crate::stats::Samples::new(reserve).summary(),
        crate::stats::Samples::new(settle).summary()
    );
    Ok(())
}

async fn room_for_ten(
    name: &str,
    budgets: &somagent_billing::budgets::Budgets,
) -> anyhow::Result<()> {
    use somagent_billing::domain::budget::{CallScope, Cost};
    let tenant = bench_tenant()?;
    budgets
        .put(
            &bench_admin(&tenant),
            vec![tokens_budget("small", "tenant", "", 1000)],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cost = Cost {
        tokens: 100,
        micros: 0,
        currency: "USD".into(),
    };
    let calls = (0..100).map(|i| {
        let budgets = budgets.clone();
        let tenant = tenant.clone();
        let cost = cost.clone();
        tokio::spawn(async move {
            let call = CallScope {
                user: format!("u{i}"),
                project: String::new(),
            };
            let held = budgets.reserve(&tenant, &call, &cost, 0).await.ok()?;
            budgets.settle(&tenant, &held.id, 100, 0).await.ok()?;
            Some(())
        })
    });
    let outcomes = futures::future::join_all(calls).await;
    let done = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Some(()))))
        .count();
    let state = budgets
        .list(&tenant)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let spent = state.first().map_or(0, |s| s.spent);
    println!(
        "{name:<22} 100 concurrent calls of 100 tokens against a limit of 1000: {done} ran, {} refused; spent {spent} of 1000",
        100 - done
    );
    anyhow::ensure!(
        done == 10 && spent == 1000,
        "{name}: the budget did not hold"
    );
    Ok(())
}
