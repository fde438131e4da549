//! `billing.usage` into the ledger on each bus: every event entered once however often
//! it comes, a malformed one dead-lettered and the rest entered, and a consumer killed
//! again and again in the middle of its work loses and doubles nothing.

use std::time::Duration;

use somagent_billing::intake;
use somagent_billing::ledger::{Ledger, UsageQuery};
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::events::{ConsumeOptions, Envelope, EventBus, topics};
use tokio_util::sync::CancellationToken;

use crate::support::{buses, databases, model_call, tenant, tool_call};

/// The tenant's entries and their total cost, now.
async fn entered(ledger: &Ledger) -> (u64, i64) {
    let now = unix_now_ms();
    let (_, totals) = ledger
        .usage(
            &tenant("acme"),
            &UsageQuery {
                from_ms: now - 3_600_000,
                to_ms: now + 3_600_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    totals.first().map_or((0, 0), |t| (t.calls, t.cost_micros))
}

/// Waits until the ledger holds `calls` entries (and a little longer, to see that no
/// more come).
async fn until_entered(ledger: &Ledger, calls: u64, what: &str) -> (u64, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = entered(ledger).await;
        if now.0 >= calls {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return entered(ledger).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {} of {calls} entered",
            now.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start(bus: &EventBus, ledger: &Ledger) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let (bus, ledger, token) = (bus.clone(), ledger.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let run = intake::consumer(&bus, ledger, ConsumeOptions::new(token))
            .await
            .unwrap();
        run.await;
    });
    (stop, task)
}

#[tokio::test]
async fn usage_events_enter_the_ledger_once_and_a_malformed_one_is_dead_lettered() {
    for (bus_name, bus, _bus_dir) in buses().await {
        let (_, db, _db_dir) = databases().await.swap_remove(0);
        let ledger = Ledger::new(db);
        let calls: Vec<Envelope> = (0..200)
            .map(|i| match i % 4 {
                3 => tool_call("acme", "bob", "github", 2000),
                _ => model_call("acme", "ann", "fast", 1000 + i, 10 * i),
            })
            .collect();
        let mut malformed = model_call("acme", "ann", "fast", 1, 1);
        malformed.data["cost_micros"] = serde_json::json!(-1);
        let mut dead = bus
            .subscribe(
                "dead-letter-reader",
                &[&format!("{}.dlq", topics::BILLING_USAGE)],
            )
            .await
            .unwrap();
        for (i, e) in calls.iter().enumerate() {
            bus.publish(topics::BILLING_USAGE, "acme", e).await.unwrap();
            if i == 50 {
                bus.publish(topics::BILLING_USAGE, "acme", &malformed)
                    .await
                    .unwrap();
            }
        }
        // Every event again (a producer's retry, a replay): nothing changes.
        for e in &calls[..100] {
            bus.publish(topics::BILLING_USAGE, "acme", e).await.unwrap();
        }
        let (_stop, _task) = start(&bus, &ledger);
        let expected: i64 = calls
            .iter()
            .map(|e| e.data["cost_micros"].as_i64().unwrap())
            .sum();
        assert_eq!(
            until_entered(&ledger, 200, bus_name).await,
            (200, expected),
            "{bus_name}"
        );
        let letter = tokio::time::timeout(Duration::from_secs(60), dead.next())
            .await
            .expect("a dead letter")
            .unwrap();
        assert_eq!(letter.event.id, malformed.id, "{bus_name}");
        assert_eq!(letter.event.data["poison"], true, "{bus_name}");
    }
}

#[tokio::test]
async fn a_consumer_killed_mid_ingest_again_and_again_loses_and_doubles_nothing() {
    let (bus_count, db_count) = (buses().await.len(), databases().await.len());
    for b in 0..bus_count {
        for d in 0..db_count {
            // Each pair fresh: its own log or topics, its own empty ledger.
            let (bus_name, bus, _bus_dir) = buses().await.swap_remove(b);
            let (db_name, db, _db_dir) = databases().await.swap_remove(d);
            let ledger = Ledger::new(db);
            let calls: Vec<Envelope> = (0..3000)
                .map(|i| model_call("acme", "ann", "fast", 100 + i, i))
                .collect();
            let expected: i64 = calls
                .iter()
                .map(|e| e.data["cost_micros"].as_i64().unwrap())
                .sum();
            // Published while the consumer is killed (its task dropped wherever it is:
            // mid-transaction, between the ledger's commit and the bus's) and started
            // again, over and over.
            let publisher = {
                let bus = bus.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    for chunk in calls.chunks(100) {
                        for e in chunk {
                            bus.publish(topics::BILLING_USAGE, "acme", e).await.unwrap();
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            };
            for _ in 0..4 {
                let (_stop, task) = start(&bus, &ledger);
                tokio::time::sleep(Duration::from_millis(150)).await;
                task.abort();
                let _ = task.await;
            }
            publisher.await.unwrap();
            let (_stop, _task) = start(&bus, &ledger);
            assert_eq!(
                until_entered(&ledger, 3000, bus_name).await,
                (3000, expected),
                "{bus_name}/{db_name}"
            );
        }
    }
}
