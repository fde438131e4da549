//! Budgets with reservations, on the embedded store with counters in process and on
//! PostgreSQL with counters in Redis: concurrent calls never hold more than the room,
//! settlements count once and survive a restart, a dead caller's hold expires, and
//! each threshold is announced once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use somagent_billing::budgets::Budgets;
use somagent_billing::counters::{Counters, RedisCounters};
use somagent_billing::domain::budget::{BudgetInput, CallScope, Cost};
use somagent_common::auth::{Capability, Principal};
use somagent_common::config::EventsUrl;
use somagent_common::error::ErrorCode;
use somagent_common::infra::cache::{Cache, MemoryCache, RedisCache};
use somagent_common::infra::db::Db;
use somagent_common::infra::events::EventBus;
use somagent_common::infra::outbox::Outbox;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::support::{databases, tenant, unique};

struct Setup {
    name: &'static str,
    db: Db,
    cache: Cache,
    bus: EventBus,
    _dirs: Vec<tempfile::TempDir>,
}

impl Setup {
    /// The budgets as a (re)started billing process sees them.
    fn budgets(&self) -> Budgets {
        let counters = match &self.cache {
            Cache::Redis(r) => Counters::Redis(RedisCounters::new(r.clone())),
            Cache::Memory(_) => Counters::Local(Arc::default()),
        };
        Budgets::new(
            self.db.clone(),
            counters,
            Outbox::new(self.db.clone(), self.bus.clone()),
            self.cache.clone(),
        )
    }
}

/// The embedded store with counters in process; PostgreSQL with counters in Redis.
async fn setups() -> Vec<Setup> {
    let mut out = Vec::new();
    for (name, db, dir) in databases().await {
        let bus_dir = tempfile::tempdir().unwrap();
        let bus = EventBus::connect(&EventsUrl::Local { path: None }, bus_dir.path())
            .await
            .unwrap();
        let mut dirs = vec![bus_dir];
        dirs.extend(dir);
        if name == "sqlite" {
            out.push(Setup {
                name: "sqlite + in process",
                db,
                cache: Cache::Memory(MemoryCache::default()),
                bus,
                _dirs: dirs,
            });
        } else if let Some(url) = somagent_common::testing::required_env("CACHE_URL") {
            let url = format!("{url}?prefix={}", unique("budgets"));
            let redis = RedisCache::connect(&url).await.unwrap();
            out.push(Setup {
                name: "postgres + redis",
                db,
                cache: Cache::Redis(redis),
                bus,
                _dirs: dirs,
            });
        }
    }
    out
}

fn admin(tenant_name: &str) -> Principal {
    Principal {
        tenant: tenant(tenant_name),
        subject: "admin".into(),
        username: None,
        roles: BTreeSet::new(),
        capabilities: BTreeSet::from([Capability::TenantAdmin, Capability::BillingRead]),
        issuer: "test".into(),
        token_id: None,
        expires_at: None,
        issued_at: None,
        actor: None,
        auth_methods: Vec::new(),
        api_key: None,
        audiences: Vec::new(),
    }
}

fn budget(name: &str, scope: &str, id: &str, metric: &str, limit: i64) -> BudgetInput {
    BudgetInput {
        name: name.into(),
        scope: scope.into(),
        scope_id: id.into(),
        metric: metric.into(),
        period: "month".into(),
        limit,
        ..Default::default()
    }
}

fn tokens(n: i64) -> Cost {
    Cost {
        tokens: n,
        micros: n * 10,
        currency: "USD".into(),
    }
}

fn user(name: &str) -> CallScope {
    CallScope {
        user: name.into(),
        project: String::new(),
    }
}

/// The notifications billing put in its outbox, as (type, threshold, budget).
async fn notices(db: &Db) -> Vec<(String, String)> {
    let rows = sqlx::query(
        "SELECT payload FROM outbox WHERE topic = 'agent.notifications' ORDER BY created_at",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            let event: serde_json::Value =
                serde_json::from_str(&r.try_get::<String, _>(0).unwrap()).unwrap();
            (
                event["data"]["threshold"].as_str().unwrap().to_owned(),
                event["data"]["budget"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_hundred_concurrent_calls_get_exactly_the_room_of_ten() {
    for setup in setups().await {
        let name = setup.name;
        let t = unique("t");
        let budgets = setup.budgets();
        budgets
            .put(
                &admin(&t),
                vec![budget("team", "tenant", "", "tokens", 1000)],
            )
            .await
            .unwrap();
        let calls = (0..100).map(|_| {
            let budgets = budgets.clone();
            let t = tenant(&t);
            tokio::spawn(async move { budgets.reserve(&t, &user("u"), &tokens(100), 0).await })
        });
        let mut held = Vec::new();
        let mut refused = 0;
        for call in futures_join(calls).await {
            match call {
                Ok(h) => held.push(h),
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::BudgetExhausted, "{name}: {e}");
                    assert_eq!(e.details["budget"]["name"], "team", "{name}");
                    assert!(e.message.contains("`team`"), "{name}: {}", e.message);
                    refused += 1;
                }
            }
        }
        assert_eq!((held.len(), refused), (10, 90), "{name}");
        assert!(held.iter().all(|h| h.budgets == ["team"]), "{name}");
        let state = &budgets.list(&tenant(&t)).await.unwrap()[0];
        assert_eq!((state.spent, state.reserved), (0, 1000), "{name}");

        for h in &held {
            budgets.settle(&tenant(&t), &h.id, 100, 1000).await.unwrap();
            // A settle that comes again counts once.
            budgets.settle(&tenant(&t), &h.id, 100, 1000).await.unwrap();
        }
        let state = &budgets.list(&tenant(&t)).await.unwrap()[0];
        assert_eq!((state.spent, state.reserved), (1000, 0), "{name}");
        let e = budgets
            .reserve(&tenant(&t), &user("u"), &tokens(1), 0)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BudgetExhausted, "{name}");
        assert_eq!(e.details["spent"], 1000, "{name}");
        // 80 % and 100 % each announced once, to the tenant's admins.
        assert_eq!(
            notices(&setup.db).await,
            [
                ("soft".to_owned(), "team".to_owned()),
                ("exhausted".into(), "team".into())
            ],
            "{name}"
        );
    }
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_call_is_held_against_every_budget_it_falls_under_and_only_those() {
    for setup in setups().await {
        let name = setup.name;
        let t = unique("t");
        let budgets = setup.budgets();
        let mut money = budget("alice-money", "user", "alice", "money", 5000);
        money.currency = "USD".into();
        budgets
            .put(
                &admin(&t),
                vec![
                    budget("team", "tenant", "", "tokens", 10_000),
                    budget("alice", "user", "alice", "tokens", 300),
                    money,
                ],
            )
            .await
            .unwrap();
        let t = tenant(&t);
        let h = budgets
            .reserve(&t, &user("alice"), &tokens(200), 0)
            .await
            .unwrap();
        assert_eq!(h.budgets, ["team", "alice", "alice-money"], "{name}");
        // Bob is under the team budget only.
        let h2 = budgets
            .reserve(&t, &user("bob"), &tokens(2000), 0)
            .await
            .unwrap();
        assert_eq!(h2.budgets, ["team"], "{name}");
        // Alice's own budget has 100 left: refused, and nothing held on the others.
        let e = budgets
            .reserve(&t, &user("alice"), &tokens(200), 0)
            .await
            .unwrap_err();
        assert_eq!(e.details["budget"]["name"], "alice", "{name}");
        assert_eq!(
            (
                e.details["reserved"].as_i64(),
                e.details["requested"].as_i64()
            ),
            (Some(200), Some(200))
        );
        let team = &budgets.list(&t).await.unwrap()[0];
        assert_eq!(team.reserved, 2200, "{name}");
        // Money in another currency is not weighed against a USD budget.
        let euros = Cost {
            tokens: 10,
            micros: 1_000_000,
            currency: "EUR".into(),
        };
        let h3 = budgets
            .reserve(&t, &user("alice"), &euros, 0)
            .await
            .unwrap();
        assert_eq!(h3.budgets, ["team", "alice"], "{name}");
        // A failed call gives its hold back.
        budgets.release(&t, &h.id).await.unwrap();
        budgets.release(&t, &h2.id).await.unwrap();
        budgets.release(&t, &h3.id).await.unwrap();
        let all = budgets.list(&t).await.unwrap();
        assert!(
            all.iter().all(|s| s.reserved == 0 && s.spent == 0),
            "{name}"
        );
        // Another tenant's reservation id settles nothing here.
        let h4 = budgets
            .reserve(&t, &user("bob"), &tokens(10), 0)
            .await
            .unwrap();
        budgets
            .settle(&tenant("other"), &h4.id, 10, 0)
            .await
            .unwrap();
        assert_eq!(budgets.list(&t).await.unwrap()[0].reserved, 10, "{name}");
        budgets.release(&t, &h4.id).await.unwrap();

        // A project's budget holds the calls made for that project, whoever makes
        // them, and no others.
        budgets
            .put(
                &admin(t.as_str()),
                vec![
                    budget("team", "tenant", "", "tokens", 10_000),
                    budget("launch", "project", "p-launch", "tokens", 500),
                ],
            )
            .await
            .unwrap();
        let for_launch = |who: &str| CallScope {
            user: who.into(),
            project: "p-launch".into(),
        };
        let h5 = budgets
            .reserve(&t, &for_launch("bob"), &tokens(400), 0)
            .await
            .unwrap();
        assert_eq!(h5.budgets, ["team", "launch"], "{name}");
        let e = budgets
            .reserve(&t, &for_launch("carol"), &tokens(200), 0)
            .await
            .unwrap_err();
        assert_eq!(e.details["budget"]["name"], "launch", "{name}");
        let elsewhere = CallScope {
            user: "carol".into(),
            project: "p-other".into(),
        };
        let h6 = budgets
            .reserve(&t, &elsewhere, &tokens(200), 0)
            .await
            .unwrap();
        assert_eq!(h6.budgets, ["team"], "{name}");
    }
}

#[tokio::test]
async fn a_hold_whose_caller_died_expires_and_a_late_settle_still_counts() {
    for setup in setups().await {
        let name = setup.name;
        let t = unique("t");
        let budgets = setup.budgets();
        budgets
            .put(
                &admin(&t),
                vec![budget("team", "tenant", "", "tokens", 1000)],
            )
            .await
            .unwrap();
        let t = tenant(&t);
        let stop = CancellationToken::new();
        tokio::spawn(budgets.expiry(stop.clone()));
        let h = budgets
            .reserve(&t, &user("u"), &tokens(900), 1000)
            .await
            .unwrap();
        assert!(
            budgets
                .reserve(&t, &user("u"), &tokens(900), 0)
                .await
                .is_err(),
            "{name}"
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let state = &budgets.list(&t).await.unwrap()[0];
        assert_eq!((state.spent, state.reserved), (0, 0), "{name}: given back");
        // The caller was only slow: what it used still counts.
        budgets.settle(&t, &h.id, 700, 0).await.unwrap();
        let state = &budgets.list(&t).await.unwrap()[0];
        assert_eq!((state.spent, state.reserved), (700, 0), "{name}");
        stop.cancel();
    }
}

#[tokio::test]
async fn spend_survives_a_restart_and_a_new_limit() {
    for setup in setups().await {
        let name = setup.name;
        let t = unique("t");
        let budgets = setup.budgets();
        budgets
            .put(
                &admin(&t),
                vec![budget("team", "tenant", "", "tokens", 1000)],
            )
            .await
            .unwrap();
        let tn = tenant(&t);
        let h = budgets
            .reserve(&tn, &user("u"), &tokens(600), 0)
            .await
            .unwrap();
        budgets.settle(&tn, &h.id, 600, 0).await.unwrap();
        if let Cache::Redis(redis) = &setup.cache {
            // Redis lost its data: the counter starts again from the database.
            redis
                .delete(&format!(
                    "budget:c:{}|tenant:|tokens|month|{}",
                    t,
                    state_label(&budgets, &tn).await
                ))
                .await
                .unwrap();
        }
        let restarted = setup.budgets();
        assert_eq!(restarted.list(&tn).await.unwrap()[0].spent, 600, "{name}");
        assert!(
            restarted
                .reserve(&tn, &user("u"), &tokens(500), 0)
                .await
                .is_err(),
            "{name}"
        );
        // Raised and renamed: what was spent stays.
        let after = restarted
            .put(
                &admin(&t),
                vec![budget("bigger", "tenant", "", "tokens", 2000)],
            )
            .await
            .unwrap();
        assert_eq!(
            (after[0].budget.name.as_str(), after[0].spent),
            ("bigger", 600),
            "{name}"
        );
        restarted
            .reserve(&tn, &user("u"), &tokens(500), 0)
            .await
            .unwrap();
        // Every change is audited with what was there before.
        let audits: i64 = sqlx::query("SELECT COUNT(*) FROM outbox WHERE topic = 'agent.audit'")
            .fetch_one(setup.db.pool())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(audits, 2, "{name}");
    }
}

async fn state_label(budgets: &Budgets, t: &somagent_common::tenant::TenantId) -> String {
    budgets.list(t).await.unwrap()[0].period_label.clone()
}

#[tokio::test]
async fn a_wrong_budget_is_refused_naming_the_field() {
    for setup in setups().await {
        let t = unique("t");
        let budgets = setup.budgets();
        let e = budgets
            .put(
                &admin(&t),
                vec![
                    budget("a", "tenant", "", "tokens", 10),
                    budget("b", "tenant", "", "tokens", 20),
                ],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert!(e.details["fields"]["budgets[1].scope"].is_string(), "{e:?}");
        assert!(
            budgets.list(&tenant(&t)).await.unwrap().is_empty(),
            "nothing half-written"
        );
    }
}
