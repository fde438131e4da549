//! Invoices on SQLite and PostgreSQL: a month closes an hour after it ends with its
//! lines per model and tool, never changes after, and usage that arrives late goes on
//! the next invoice, so every entry is invoiced exactly once.

use somagent_billing::domain::entry::{EntryKind, LedgerEntry};
use somagent_billing::invoices::{CLOSE_AFTER_MS, Invoice, Invoices};
use somagent_billing::ledger::Ledger;
use somagent_common::clock::unix_now_ms;

use crate::support::{databases, tenant, unique};

/// 2026-10-15T12:00:00Z and 2026-11-15T12:00:00Z.
const OCTOBER: i64 = 1_792_065_600_000;
const NOVEMBER: i64 = 1_794_744_000_000;

fn entry(tenant_name: &str, kind: EntryKind, item: &str, at_ms: i64, cost: i64) -> LedgerEntry {
    LedgerEntry {
        event_id: unique("ev"),
        tenant: tenant(tenant_name),
        kind,
        call_id: unique("call"),
        user: "alice".into(),
        session_id: String::new(),
        project_id: String::new(),
        item: item.into(),
        detail: String::new(),
        prompt_tokens: if kind == EntryKind::Tool { 0 } else { 100 },
        completion_tokens: if kind == EntryKind::Tool { 0 } else { 50 },
        prompt_price_micros: 0,
        completion_price_micros: 0,
        cost_micros: cost,
        currency: "USD".into(),
        event_time_ms: at_ms,
    }
}

/// (kind, item, late, calls, amount) of each line.
fn lines(invoice: &Invoice) -> Vec<(String, String, bool, u64, i64)> {
    invoice
        .lines
        .iter()
        .map(|l| {
            (
                l.kind.clone(),
                l.item.clone(),
                l.late,
                l.calls,
                l.amount_micros,
            )
        })
        .collect()
}

fn line(
    kind: &str,
    item: &str,
    late: bool,
    calls: u64,
    amount: i64,
) -> (String, String, bool, u64, i64) {
    (kind.into(), item.into(), late, calls, amount)
}

#[tokio::test]
async fn a_month_closes_once_with_its_lines_and_late_usage_goes_on_the_next() {
    for (name, db, _dir) in databases().await {
        let t = unique("t");
        let ledger = Ledger::new(db.clone());
        let invoices = Invoices::new(db.clone()).settled_after(0);
        ledger
            .enter(&[
                entry(&t, EntryKind::Model, "default", OCTOBER, 300),
                entry(&t, EntryKind::Model, "default", OCTOBER + 1000, 200),
                entry(&t, EntryKind::Tool, "crm", OCTOBER + 2000, 2500),
                entry(&t, EntryKind::Model, "default", NOVEMBER, 700),
                entry("someone-else", EntryKind::Model, "default", OCTOBER, 9999),
            ])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let now = unix_now_ms();
        let tn = tenant(&t);

        // Before closing, October and November are open, their figures live.
        let listed = invoices.list(&tn, now).await.unwrap();
        let ids: Vec<(&str, bool)> = listed.iter().map(|i| (i.id.as_str(), i.closed)).collect();
        assert_eq!(ids.last(), Some(&("2026-10", false)), "{name}: {ids:?}");
        assert!(ids.contains(&("2026-11", false)), "{name}: {ids:?}");

        // Due an hour after the month's end: both close, once, whoever races.
        let closing = futures::future::join_all((0..3).map(|_| invoices.close_due(now))).await;
        let closed: usize = closing.into_iter().map(Result::unwrap).sum();
        assert!(closed >= 2, "{name}: {closed}");
        let october = invoices.get(&tn, "2026-10", now).await.unwrap().unwrap();
        assert!(october.closed, "{name}");
        assert_eq!(
            lines(&october),
            [
                line("model", "default", false, 2, 500),
                line("tool", "crm", false, 1, 2500)
            ],
            "{name}"
        );
        assert_eq!(october.totals(), [("USD".to_owned(), 3000)], "{name}");
        let november = invoices.get(&tn, "2026-11", now).await.unwrap().unwrap();
        assert_eq!(
            lines(&november),
            [line("model", "default", false, 1, 700)],
            "{name}"
        );
        assert_eq!(
            invoices.close_due(now).await.unwrap(),
            0,
            "{name}: nothing more is due"
        );

        // October usage that reaches the ledger now is on the open month's invoice, as
        // late; October's stays as it was.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        ledger
            .enter(&[entry(&t, EntryKind::Model, "default", OCTOBER + 5000, 40)])
            .await
            .unwrap();
        let later = unix_now_ms() + 1000;
        assert_eq!(
            invoices.get(&tn, "2026-10", later).await.unwrap().unwrap(),
            october,
            "{name}"
        );
        let open = invoices.list(&tn, later).await.unwrap();
        assert!(!open[0].closed, "{name}");
        assert_eq!(
            lines(&open[0]),
            [line("model", "default", true, 1, 40)],
            "{name}"
        );
        let listed: Vec<&str> = open.iter().map(|i| i.id.as_str()).collect();
        assert!(
            listed.ends_with(&["2026-11", "2026-10"]),
            "{name}: {listed:?}"
        );

        // A closed invoice never changes.
        for sql in [
            "UPDATE billing_invoice_lines SET amount_micros = 0",
            "DELETE FROM billing_invoice_lines",
            "DELETE FROM billing_invoices",
        ] {
            assert!(
                sqlx::query(sql).execute(db.pool()).await.is_err(),
                "{name}: {sql}"
            );
        }

        // A month that ends within the hour is not closed yet.
        let december_end = 1_798_761_600_000;
        invoices
            .close_due(december_end + CLOSE_AFTER_MS - 1)
            .await
            .unwrap();
        assert!(
            !invoices
                .get(&tn, "2026-12", december_end)
                .await
                .unwrap()
                .unwrap()
                .closed,
            "{name}"
        );

        // Another tenant's months are its own; a month before any usage has none.
        assert!(
            invoices.get(&tn, "2026-09", now).await.unwrap().is_none(),
            "{name}"
        );
        assert!(
            invoices
                .get(&tn, "not-a-month", now)
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        let theirs = invoices
            .get(&tenant("someone-else"), "2026-10", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(theirs.totals(), [("USD".to_owned(), 9999)], "{name}");
    }
}
