//! Webhook fan-out: notifications queued for ten endpoints of a tenant, nine local
//! servers and one dead address, sent by the notification service's sender (signed,
//! at most four tries in flight per endpoint, 64 in all): deliveries/s to the live
//! endpoints, and whether the dead one held them up (its tries fail fast and are
//! retried later; the live ones must not wait for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use somagent_common::config::{DatabaseUrl, EventsUrl};
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::metrics::Metrics;
use somagent_common::secrets::{MasterKey, Sealer};
use somagent_common::tenant::TenantId;
use somagent_notification::domain::notice;
use somagent_notification::domain::retry::RetrySchedule;
use somagent_notification::sender::{Sender, SenderConfig};
use somagent_notification::webhooks::Webhooks;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const LIVE: usize = 9;

pub async fn run(notifications: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "notification",
    )
    .await?;
    db.migrate("common", COMMON_MIGRATIONS).await?;
    db.migrate("notification", somagent_notification::MIGRATIONS)
        .await?;
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, dir.path()).await?;
    let (_, key) = MasterKey::generate();
    let webhooks = Webhooks::new(
        db.clone(),
        Arc::new(Sealer::parse(&key).map_err(anyhow::Error::msg)?),
        true,
    );
    let tenant = TenantId::parse("bench").map_err(anyhow::Error::msg)?;
    // Nine endpoints that answer 204 at once, counting what they get.
    let received = Arc::new(AtomicUsize::new(0));
    for _ in 0..LIVE {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let counter = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        webhooks
            .create(&tenant, &url, "live", &[])
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
    }
    // And one where nothing listens.
    let parked = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dead = format!("http://{}/hook", parked.local_addr()?);
    drop(parked);
    webhooks
        .create(&tenant, &dead, "dead", &[])
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;

    let queued_at = Instant::now();
    let mut tx = db.begin().await?;
    for i in 0..notifications {
        let event = Envelope::new(
            "bench.tick",
            "bench",
            tenant.clone(),
            json!({"audience": "tenant_admins", "title": format!("tick {i}")}),
        );
        let n = notice::from_event(topics::NOTIFICATIONS, &event).expect("a notice");
        Webhooks::enqueue(&mut tx, &tenant, &n, somagent_common::clock::unix_now_ms()).await?;
    }
    tx.commit().await?;
    let queued = queued_at.elapsed();
    let wake = Arc::new(Notify::new());
    let sender = Sender::new(
        webhooks,
        SenderConfig {
            schedule: RetrySchedule::default(),
            concurrency: 64,
            per_endpoint: 4,
            attempt_timeout: Duration::from_secs(15),
            disable_after: Duration::from_secs(5 * 86_400),
            poll: Duration::from_millis(200),
        },
        wake.clone(),
        Outbox::new(db.clone(), bus),
        &Metrics::new("bench"),
    )?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(sender.run(stop.clone()));
    wake.notify_one();
    let expected = notifications * LIVE;
    while received.load(Ordering::Relaxed) < expected {
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!(
                "only {} of {expected} deliveries arrived",
                received.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    let _ = running.await;
    println!(
        "queue            {notifications} notifications × 10 endpoints queued in {:.2} s",
        queued.as_secs_f64()
    );
    println!(
        "fan-out          {expected} deliveries to {LIVE} live endpoints in {:.2} s: {:.0} deliveries/s (the dead endpoint's {notifications} first tries failed alongside, left for retry)",
        took.as_secs_f64(),
        expected as f64 / took.as_secs_f64()
    );
    Ok(())
}
