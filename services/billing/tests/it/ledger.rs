//! The ledger on each database: each event entered once, whatever order and however
//! often events come; sums per group exact and per tenant; rows never changed.

use somagent_billing::domain::entry::LedgerEntry;
use somagent_billing::domain::grouping::GroupBy;
use somagent_billing::ledger::{Ledger, UsageQuery};
use somagent_common::clock::unix_now_ms;

use crate::support::{databases, model_call, tenant, tool_call};

fn entry(e: &somagent_common::infra::events::Envelope) -> LedgerEntry {
    LedgerEntry::from_event(e).unwrap()
}

#[tokio::test]
async fn each_event_is_entered_once_and_usage_adds_up_per_group_and_tenant() {
    for (name, db, _dir) in databases().await {
        let ledger = Ledger::new(db);
        let calls = [
            model_call("acme", "ann", "fast", 1000, 100),
            model_call("acme", "ann", "fast", 2500, 10),
            model_call("acme", "bob", "smart", 333, 77),
            tool_call("acme", "bob", "github", 2000),
            model_call("globex", "gil", "fast", 9999, 9999),
        ];
        let entries: Vec<LedgerEntry> = calls.iter().map(entry).collect();
        // Out of order, then all again, then one more time alone: entered once.
        let mut reordered = entries.clone();
        reordered.reverse();
        assert_eq!(ledger.enter(&reordered).await.unwrap(), 5, "{name}");
        assert_eq!(ledger.enter(&entries).await.unwrap(), 0, "{name}");
        assert_eq!(ledger.enter(&entries[2..3]).await.unwrap(), 0, "{name}");
        // The same call under another event id is the same call.
        let mut again = entries[0].clone();
        again.event_id = uuid::Uuid::new_v4().to_string();
        assert_eq!(ledger.enter(&[again]).await.unwrap(), 0, "{name}");

        let now = unix_now_ms();
        let period = |groups: Vec<GroupBy>| UsageQuery {
            from_ms: now - 3_600_000,
            to_ms: now + 3_600_000,
            groups,
            ..Default::default()
        };
        let cost = |e: &LedgerEntry| e.cost_micros;
        let (rows, totals) = ledger
            .usage(&tenant("acme"), &period(vec![GroupBy::Model]))
            .await
            .unwrap();
        let by_model: Vec<(Vec<String>, u64, u64, u64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.group.clone(),
                    r.calls,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cost_micros,
                )
            })
            .collect();
        assert_eq!(
            by_model,
            [
                (vec![String::new()], 1, 0, 0, 2000),
                (
                    vec!["fast".to_owned()],
                    2,
                    3500,
                    110,
                    cost(&entries[0]) + cost(&entries[1])
                ),
                (vec!["smart".to_owned()], 1, 333, 77, cost(&entries[2])),
            ],
            "{name}"
        );
        let acme_total: i64 = entries[..4].iter().map(cost).sum();
        assert_eq!(totals.len(), 1, "{name}");
        assert_eq!(
            (
                totals[0].calls,
                totals[0].cost_micros,
                totals[0].currency.as_str()
            ),
            (4, acme_total, "USD"),
            "{name}: another tenant's usage is not in this one's"
        );
        // 1000 tokens at 150 and 100 at 600 per 1,000: 150 + 60 micro-units.
        assert_eq!(cost(&entries[0]), 210);

        let (by_user_tool, _) = ledger
            .usage(&tenant("acme"), &period(vec![GroupBy::User, GroupBy::Tool]))
            .await
            .unwrap();
        let keys: Vec<Vec<String>> = by_user_tool.iter().map(|r| r.group.clone()).collect();
        assert_eq!(
            keys,
            [
                vec!["ann".to_owned(), String::new()],
                vec!["bob".to_owned(), String::new()],
                vec!["bob".to_owned(), "github".to_owned()],
            ],
            "{name}"
        );
        let (by_day, _) = ledger
            .usage(&tenant("acme"), &period(vec![GroupBy::Day]))
            .await
            .unwrap();
        let today = time::OffsetDateTime::now_utc().date().to_string();
        assert_eq!(by_day.len(), 1, "{name}");
        assert_eq!(by_day[0].group, [today], "{name}");

        let only_bob = UsageQuery {
            user: "bob".into(),
            ..period(vec![])
        };
        let (_, bob) = ledger.usage(&tenant("acme"), &only_bob).await.unwrap();
        assert_eq!(bob[0].calls, 2, "{name}");
        // Another period sees nothing.
        let before = UsageQuery {
            from_ms: now - 7_200_000,
            to_ms: now - 3_600_000,
            ..Default::default()
        };
        let (_, none) = ledger.usage(&tenant("acme"), &before).await.unwrap();
        assert!(none.is_empty(), "{name}: {none:?}");

        // Entries page by page, oldest first, all of them once.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = ledger
                .entries(&tenant("acme"), now - 3_600_000, now + 3_600_000, after, 3)
                .await
                .unwrap();
            let full = page.len() == 3;
            after = page
                .last()
                .map(|e| (e.entry.event_time_ms, e.entry.event_id.clone()));
            seen.extend(page.into_iter().map(|e| e.entry.call_id));
            if !full {
                break;
            }
        }
        let mut expected: Vec<String> = entries[..4].iter().map(|e| e.call_id.clone()).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "{name}");
    }
}

#[tokio::test]
async fn the_ledger_refuses_any_change_to_what_it_holds() {
    for (name, db, _dir) in databases().await {
        let ledger = Ledger::new(db.clone());
        let call = entry(&model_call("acme", "ann", "fast", 10, 10));
        ledger.enter(std::slice::from_ref(&call)).await.unwrap();
        for sql in [
            "UPDATE billing_ledger SET cost_micros = 0",
            "DELETE FROM billing_ledger",
        ] {
            let refused = sqlx::query(sql).execute(db.pool()).await;
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("append-only")),
                "{name}: {sql}: {refused:?}"
            );
        }
        let now = unix_now_ms();
        let kept = ledger
            .entries(&tenant("acme"), now - 60_000, now + 60_000, None, 10)
            .await
            .unwrap();
        assert_eq!(kept[0].entry, call, "{name}: read back as it was entered");
    }
}
