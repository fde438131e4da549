//! Webhook endpoints and the delivery queue on both engines: secrets sealed and bound
//! to their endpoint, deliveries queued once per matching enabled endpoint, leased so
//! that no two senders take one, retried on schedule, dead after the last try, an
//! endpoint failing too long disabled, a manual retry queued again; another tenant's
//! endpoints out of reach.

use std::sync::Arc;

use serde_json::json;
use somagent_common::error::ErrorCode;
use somagent_common::infra::db::Db;
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::paging::PageSize;
use somagent_common::secrets::{MasterKey, ResealScope, Sealer};
use somagent_common::tenant::TenantId;
use somagent_notification::domain::notice::{self, Notice};
use somagent_notification::webhooks::{Change, Health, Outcome, Webhooks};
use sqlx::Row;

use crate::{databases, unique};

fn sealer() -> Arc<Sealer> {
    keyed().1
}

/// A sealer and its key's entry.
fn keyed() -> (String, Arc<Sealer>) {
    let (_, entry) = MasterKey::generate();
    (entry.to_string(), Arc::new(Sealer::parse(&entry).unwrap()))
}

fn notice_of(tenant: &TenantId, kind: &str) -> Notice {
    let event = Envelope::new(
        kind,
        "test",
        tenant.clone(),
        json!({"audience": "tenant_admins", "severity": "warning", "title": kind}),
    );
    notice::from_event(topics::NOTIFICATIONS, &event).unwrap()
}

async fn enqueue(db: &Db, tenant: &TenantId, n: &Notice) -> u64 {
    let mut tx = db.begin().await.unwrap();
    let queued = Webhooks::enqueue(&mut tx, tenant, n, 1_000).await.unwrap();
    tx.commit().await.unwrap();
    queued
}

fn failed() -> Outcome {
    Outcome {
        status_code: 503,
        latency_ms: 4,
        error: "the endpoint answered 503".into(),
    }
}

#[tokio::test]
async fn deliveries_are_queued_leased_retried_and_dead_lettered() {
    for (engine, db, _dir) in databases().await {
        let (old_key, old) = keyed();
        let hooks = Webhooks::new(db.clone(), old, true);
        let (acme, globex) = (
            TenantId::parse(unique("acme")).unwrap(),
            TenantId::parse(unique("globex")).unwrap(),
        );
        let (billing, secret) = hooks
            .create(
                &acme,
                "http://127.0.0.1:9/a",
                "billing",
                &["billing.*".into()],
            )
            .await
            .unwrap();
        assert!(secret.starts_with("whsec_"), "{engine}");
        let (all, _) = hooks
            .create(&acme, "http://127.0.0.1:9/b", "", &[])
            .await
            .unwrap();
        let (off, _) = hooks
            .create(&acme, "http://127.0.0.1:9/c", "", &[])
            .await
            .unwrap();
        hooks
            .update(
                &acme,
                &off.id,
                Change {
                    enabled: Some(false),
                    ..Change::default()
                },
            )
            .await
            .unwrap();
        hooks
            .create(&globex, "http://127.0.0.1:9/d", "", &[])
            .await
            .unwrap();
        // The secret is sealed at rest.
        let stored: Vec<String> = sqlx::query("SELECT secret FROM webhook_endpoints")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
        assert!(
            stored
                .iter()
                .all(|s| s.starts_with("v1:") && !s.contains(&secret[6..])),
            "{engine}"
        );
        // Another tenant cannot reach the endpoint.
        assert_eq!(
            hooks.get(&globex, &billing.id).await.unwrap_err().code,
            ErrorCode::NotFound,
            "{engine}"
        );
        assert!(
            hooks.delete(&globex, &billing.id).await.is_err(),
            "{engine}"
        );

        // A budget event: the billing and the catch-all endpoints, once each.
        let budget = notice_of(&acme, "billing.budget_threshold");
        assert_eq!(enqueue(&db, &acme, &budget).await, 2, "{engine}");
        assert_eq!(
            enqueue(&db, &acme, &budget).await,
            0,
            "{engine}: again, nothing new"
        );
        assert_eq!(
            enqueue(&db, &acme, &notice_of(&acme, "turn.completed")).await,
            1,
            "{engine}"
        );

        // Claimed once: a second sender finds nothing while the lease holds; an
        // endpoint busy elsewhere is left out.
        let far = somagent_common::clock::unix_now_ms() + 60_000;
        let some = hooks
            .claim_due(10, far, std::slice::from_ref(&all.id))
            .await
            .unwrap();
        assert_eq!(some.len(), 1, "{engine}");
        assert_eq!(some[0].endpoint_id, billing.id, "{engine}");
        assert_eq!(
            *some[0].secret, *secret,
            "{engine}: the secret opens for sending"
        );
        let rest = hooks.claim_due(10, far, &[]).await.unwrap();
        assert_eq!(rest.len(), 2, "{engine}");
        assert!(
            hooks.claim_due(10, far, &[]).await.unwrap().is_empty(),
            "{engine}"
        );
        // Given back, it can be claimed again.
        hooks.unclaim(&[rest[0].id.clone()]).await.unwrap();
        let again = hooks.claim_due(10, far, &[]).await.unwrap();
        assert_eq!(again.len(), 1, "{engine}");

        // Fails, is tried again, then dead.
        let due = &some[0];
        let now = somagent_common::clock::unix_now_ms();
        assert_eq!(
            hooks
                .record(due, &failed(), Some(now - 1), i64::MAX / 4)
                .await
                .unwrap(),
            Health::Fine
        );
        let retry = hooks.claim_due(10, far, &[]).await.unwrap();
        assert_eq!(retry.len(), 1, "{engine}");
        assert_eq!(retry[0].attempts, 1, "{engine}");
        assert_eq!(
            hooks
                .record(&retry[0], &failed(), None, i64::MAX / 4)
                .await
                .unwrap(),
            Health::Fine
        );
        let (dead, _) = hooks
            .deliveries(&acme, &billing.id, "dead", PageSize::clamped(50, 50), "")
            .await
            .unwrap();
        assert_eq!(dead.len(), 1, "{engine}");
        assert_eq!(dead[0].attempts, 2, "{engine}");
        assert_eq!(dead[0].history.len(), 2, "{engine}");
        assert_eq!(dead[0].history[0].status_code, 503, "{engine}");
        assert!(
            hooks
                .get(&acme, &billing.id)
                .await
                .unwrap()
                .failing_since_ms
                > 0
        );
        // A manual retry queues it again; a success heals the endpoint.
        hooks.retry(&acme, &billing.id, &dead[0].id).await.unwrap();
        assert!(
            hooks
                .retry(&globex, &billing.id, &dead[0].id)
                .await
                .is_err(),
            "{engine}"
        );
        let manual = hooks.claim_due(10, far, &[]).await.unwrap();
        assert_eq!(manual.len(), 1, "{engine}");
        let ok = Outcome {
            status_code: 200,
            latency_ms: 3,
            error: String::new(),
        };
        hooks
            .record(&manual[0], &ok, None, i64::MAX / 4)
            .await
            .unwrap();
        let healed = hooks.get(&acme, &billing.id).await.unwrap();
        assert_eq!(healed.failing_since_ms, 0, "{engine}");
        let (delivered, _) = hooks
            .deliveries(
                &acme,
                &billing.id,
                "delivered",
                PageSize::clamped(50, 50),
                "",
            )
            .await
            .unwrap();
        assert_eq!(delivered[0].attempts, 3, "{engine}");
        assert!(
            hooks
                .deliveries(&acme, &billing.id, "lost", PageSize::clamped(50, 50), "")
                .await
                .is_err(),
            "{engine}"
        );

        // An endpoint failing longer than allowed is disabled, and gets no more.
        let to_all = &again[0];
        assert_eq!(
            hooks.record(to_all, &failed(), Some(now), 0).await.unwrap(),
            Health::Disabled,
            "{engine}"
        );
        let disabled = hooks.get(&acme, &to_all.endpoint_id).await.unwrap();
        assert!(
            !disabled.enabled && disabled.disabled_reason.contains("503"),
            "{disabled:?}"
        );
        assert!(
            hooks.claim_due(10, far, &[]).await.unwrap().is_empty(),
            "{engine}"
        );
        assert_eq!(
            enqueue(&db, &acme, &notice_of(&acme, "tenant.other")).await,
            0,
            "{engine}"
        );

        // Rotating a secret changes it; re-sealing under a new key keeps it.
        let (_, rotated) = hooks.rotate(&acme, &billing.id).await.unwrap();
        assert_ne!(*rotated, *secret, "{engine}");
        let (new_key, _) = keyed();
        let both = Arc::new(Sealer::parse(&format!("{new_key},{old_key}")).unwrap());
        let resealed = Webhooks::new(db.clone(), both.clone(), true)
            .reseal(ResealScope::NotCurrent)
            .await
            .unwrap();
        assert_eq!(resealed, 4, "{engine}: every endpoint");
        // Under the new key alone, the rotated secret still opens for sending.
        let rekeyed = Webhooks::new(db.clone(), Arc::new(Sealer::parse(&new_key).unwrap()), true);
        assert_eq!(
            enqueue(&db, &acme, &notice_of(&acme, "billing.invoice")).await,
            1,
            "{engine}"
        );
        let sent = rekeyed.claim_due(10, far, &[]).await.unwrap();
        assert_eq!(sent.len(), 1, "{engine}");
        assert_eq!(*sent[0].secret, *rotated, "{engine}");

        // Deleting removes the endpoint and its deliveries.
        hooks.delete(&acme, &billing.id).await.unwrap();
        assert!(
            hooks
                .deliveries(&acme, &billing.id, "", PageSize::clamped(50, 50), "")
                .await
                .is_err()
        );
        let left: i64 =
            sqlx::query("SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1")
                .bind(&billing.id)
                .fetch_one(db.pool())
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
        assert_eq!(left, 0, "{engine}");
        // Bad URLs and types are refused.
        let strict = Webhooks::new(db.clone(), sealer(), false);
        for url in ["http://127.0.0.1:10002/", "ftp://example.com/"] {
            assert_eq!(
                strict.create(&acme, url, "", &[]).await.unwrap_err().code,
                ErrorCode::ValidationFailed,
                "{url}"
            );
        }
    }
}

#[tokio::test]
async fn emails_wait_for_their_time_are_sent_once_and_die_after_the_last_try() {
    use somagent_notification::emails::{Emails, Recipient};
    let to = |at: i64| Recipient {
        channel: "email",
        address: "ana@example.com".into(),
        user_id: "ana".into(),
        not_before_ms: at,
    };
    for (engine, db, _dir) in databases().await {
        let emails = Emails::new(db.clone());
        let acme = TenantId::parse(unique("acme")).unwrap();
        let now = somagent_common::clock::unix_now_ms();
        let soon = notice_of(&acme, "tenant.message");
        let later = notice_of(&acme, "tenant.other");
        let mut tx = db.begin().await.unwrap();
        assert!(
            Emails::enqueue(&mut tx, &acme, &soon, &to(now))
                .await
                .unwrap()
        );
        assert!(
            !Emails::enqueue(&mut tx, &acme, &soon, &to(now))
                .await
                .unwrap(),
            "{engine}"
        );
        // Held until quiet hours end, an hour from now.
        assert!(
            Emails::enqueue(&mut tx, &acme, &later, &to(now + 3_600_000))
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let far = now + 60_000;
        // Another channel's courier does not take an email.
        assert!(
            emails.claim_due("slack", 10, far).await.unwrap().is_empty(),
            "{engine}"
        );
        let due = emails.claim_due("email", 10, far).await.unwrap();
        assert_eq!(due.len(), 1, "{engine}: the held one waits");
        assert_eq!(due[0].user_id, "ana", "{engine}");
        assert_eq!(due[0].subject, "[SomaAgent] tenant.message", "{engine}");
        assert!(
            emails.claim_due("email", 10, far).await.unwrap().is_empty(),
            "{engine}: leased"
        );
        emails
            .record(&due[0], Some("421 try later"), Some(now))
            .await
            .unwrap();
        let again = emails.claim_due("email", 10, far).await.unwrap();
        assert_eq!(again[0].attempts, 1, "{engine}");
        emails
            .record(&again[0], Some("421 try later"), None)
            .await
            .unwrap();
        assert_eq!(
            emails.statuses(&soon.id.to_string()).await.unwrap(),
            vec![("ana@example.com".to_owned(), "dead".to_owned())],
            "{engine}"
        );
        assert!(
            emails.claim_due("email", 10, far).await.unwrap().is_empty(),
            "{engine}"
        );
    }
}

/// A sender that dies mid-try leaves its lease; once the lease runs out, any sender
/// (a new process over the same database) takes the delivery again: nothing queued is
/// lost to a crash.
#[tokio::test]
async fn a_delivery_leased_by_a_crashed_sender_is_taken_again() {
    for (engine, db, _dir) in databases().await {
        let acme = TenantId::parse(unique("acme")).unwrap();
        let key = keyed();
        let before = Webhooks::new(db.clone(), key.1.clone(), true);
        before
            .create(&acme, "http://127.0.0.1:9/a", "", &[])
            .await
            .unwrap();
        assert_eq!(
            enqueue(&db, &acme, &notice_of(&acme, "tenant.message")).await,
            1
        );
        let now = somagent_common::clock::unix_now_ms();
        // Claimed with a lease that has already run out, and never recorded.
        let taken = before.claim_due(10, now - 1, &[]).await.unwrap();
        assert_eq!(taken.len(), 1, "{engine}");
        drop(before);
        let after = Webhooks::new(db.clone(), key.1, true);
        // A tenant holding its share of the slots gets no more for now.
        assert!(
            after
                .claim_due_fairly(10, now + 60_000, &[], &[acme.as_str().to_owned()])
                .await
                .unwrap()
                .is_empty(),
            "{engine}"
        );
        let again = after.claim_due(10, now + 60_000, &[]).await.unwrap();
        assert_eq!(again.len(), 1, "{engine}: the delivery is still there");
        assert_eq!(again[0].id, taken[0].id, "{engine}");
        assert_eq!(again[0].attempts, 0, "{engine}");
    }
}
