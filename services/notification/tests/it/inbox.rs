//! The inbox on both engines: each notification once, each reader their own (and an
//! administrator the administrators'), newest first page by page, read and unread per
//! reader, another tenant's never, pruned after its time.

use serde_json::json;
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::paging::PageSize;
use somagent_common::tenant::TenantId;
use somagent_notification::domain::notice::{self, Notice};
use somagent_notification::inbox::{Inbox, Reader};

use crate::{databases, unique};

fn to_user(tenant: &TenantId, user: &str, title: &str) -> (Envelope, Notice) {
    let event = Envelope::new(
        "tenant.message",
        "test",
        tenant.clone(),
        json!({"user_id": user, "severity": "info", "title": title}),
    );
    let n = notice::from_event(topics::NOTIFICATIONS, &event).unwrap();
    (event, n)
}

fn to_admins(tenant: &TenantId, title: &str) -> (Envelope, Notice) {
    let event = Envelope::new(
        "billing.budget_threshold",
        "billing",
        tenant.clone(),
        json!({"audience": "tenant_admins", "severity": "warning", "title": title}),
    );
    let n = notice::from_event(topics::NOTIFICATIONS, &event).unwrap();
    (event, n)
}

fn reader(user: &str, admin: bool) -> Reader {
    Reader {
        user_id: user.into(),
        admin,
    }
}

#[tokio::test]
async fn each_reader_sees_their_own_newest_first_and_reads_them() {
    for (engine, db, _dir) in databases().await {
        let inbox = Inbox::new(db.clone());
        let (acme, globex) = (
            TenantId::parse(unique("acme")).unwrap(),
            TenantId::parse(unique("globex")).unwrap(),
        );
        let mut added = Vec::new();
        let mut tx = db.begin().await.unwrap();
        for i in 0..5 {
            let (event, n) = to_user(&acme, "alice", &format!("for alice {i}"));
            added.push(
                Inbox::add(&mut tx, &acme, &n, &event.id, 1_000 + i)
                    .await
                    .unwrap()
                    .unwrap(),
            );
            // The same event again adds nothing.
            assert!(
                Inbox::add(&mut tx, &acme, &n, &event.id, 1_000 + i)
                    .await
                    .unwrap()
                    .is_none(),
                "{engine}"
            );
        }
        let (event, n) = to_admins(&acme, "budget");
        Inbox::add(&mut tx, &acme, &n, &event.id, 2_000)
            .await
            .unwrap()
            .unwrap();
        let (event, n) = to_user(&globex, "alice", "another tenant's alice");
        Inbox::add(&mut tx, &globex, &n, &event.id, 3_000)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();

        // Alice, not an administrator: her five, newest first, two per page.
        let alice = reader("alice", false);
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = inbox
                .list(&acme, &alice, false, PageSize::clamped(2, 50), &cursor)
                .await
                .unwrap();
            assert_eq!(page.unread, 5, "{engine}");
            seen.extend(page.notifications.into_iter().map(|n| n.title));
            if page.next_cursor.is_empty() {
                break;
            }
            cursor = page.next_cursor;
        }
        assert_eq!(
            seen,
            (0..5)
                .rev()
                .map(|i| format!("for alice {i}"))
                .collect::<Vec<_>>(),
            "{engine}"
        );
        assert!(
            inbox
                .list(
                    &acme,
                    &alice,
                    false,
                    PageSize::clamped(2, 50),
                    "not a cursor"
                )
                .await
                .is_err(),
            "{engine}"
        );
        // An administrator named alice also sees the administrators' one.
        let page = inbox
            .list(
                &acme,
                &reader("alice", true),
                false,
                PageSize::clamped(50, 50),
                "",
            )
            .await
            .unwrap();
        assert_eq!(page.notifications.len(), 6, "{engine}");
        assert_eq!(page.notifications[0].title, "budget", "{engine}");
        // Bob sees the administrators' only if he is one; never alice's.
        let bob = inbox
            .list(
                &acme,
                &reader("bob", true),
                false,
                PageSize::clamped(50, 50),
                "",
            )
            .await
            .unwrap();
        assert_eq!(bob.notifications.len(), 1, "{engine}");
        let plain_bob = inbox
            .list(
                &acme,
                &reader("bob", false),
                false,
                PageSize::clamped(50, 50),
                "",
            )
            .await
            .unwrap();
        assert!(plain_bob.notifications.is_empty(), "{engine}");

        // Reading: per reader; another's notification is not found.
        let first = &added[0].id;
        assert!(
            inbox.mark_read(&acme, &alice, first).await.unwrap(),
            "{engine}"
        );
        assert!(
            !inbox
                .mark_read(&acme, &reader("bob", true), first)
                .await
                .unwrap(),
            "{engine}"
        );
        assert!(
            !inbox.mark_read(&globex, &alice, first).await.unwrap(),
            "{engine}"
        );
        let unread = inbox
            .list(&acme, &alice, true, PageSize::clamped(50, 50), "")
            .await
            .unwrap();
        assert_eq!(unread.unread, 4, "{engine}");
        assert!(
            unread.notifications.iter().all(|n| &n.id != first),
            "{engine}"
        );
        let all = inbox
            .list(&acme, &alice, false, PageSize::clamped(50, 50), "")
            .await
            .unwrap();
        assert!(
            all.notifications
                .iter()
                .any(|n| &n.id == first && n.read_at_ms > 0)
        );
        // The administrators' notification is read by each administrator on their own.
        let admin = reader("alice", true);
        assert_eq!(
            inbox.mark_all_read(&acme, &admin).await.unwrap(),
            5,
            "{engine}"
        );
        let bob_admin = inbox
            .list(
                &acme,
                &reader("bob", true),
                true,
                PageSize::clamped(50, 50),
                "",
            )
            .await
            .unwrap();
        assert_eq!(bob_admin.unread, 1, "{engine}");
        // The other tenant's alice still has hers unread.
        let theirs = inbox
            .list(&globex, &alice, true, PageSize::clamped(50, 50), "")
            .await
            .unwrap();
        assert_eq!(theirs.unread, 1, "{engine}");

        // Pruning removes what is older, with its reads.
        assert_eq!(inbox.prune(1_003).await.unwrap(), 3, "{engine}");
        let left = inbox
            .list(&acme, &admin, false, PageSize::clamped(50, 50), "")
            .await
            .unwrap();
        assert_eq!(left.notifications.len(), 3, "{engine}");
    }
}
