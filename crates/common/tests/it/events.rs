use std::time::Duration;

use somagent_common::config::{DatabaseUrl, EventsUrl};
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db, claim_event};
use somagent_common::infra::events::{Delivery, Envelope, EventBus, Subscription};

use crate::helpers::{real_url, tenant, unique};

/// Long enough for a Kafka group to form on a cold broker.
const WAIT: Duration = Duration::from_secs(60);

/// A fresh bus per engine: its own log file, or its own topic prefix on Kafka.
async fn buses() -> Vec<(EventBus, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let local = EventBus::connect(&EventsUrl::Local { path: None }, dir.path())
        .await
        .unwrap();
    let mut all = vec![(local, dir)];
    if let Some(url) = real_url("EVENTS") {
        let url = format!("{url}?prefix={}.", unique("test"));
        let kafka = EventBus::connect(&url.parse().unwrap(), std::path::Path::new("."))
            .await
            .unwrap();
        all.push((kafka, tempfile::tempdir().unwrap()));
    }
    all
}

fn event(n: u32) -> Envelope {
    Envelope::new(
        "test.happened",
        "contract",
        tenant("acme"),
        serde_json::json!({ "n": n }),
    )
    .with_subject(format!("thing-{n}"))
}

async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("an event within the deadline")
        .unwrap()
}

/// Nothing more arrives within a short wait.
async fn nothing_more(sub: &mut Subscription) {
    let extra = tokio::time::timeout(Duration::from_secs(3), sub.next()).await;
    assert!(
        extra.is_err(),
        "unexpected delivery: {:?}",
        extra.map(|d| d.map(|d| d.event.data))
    );
}

#[tokio::test]
async fn published_events_arrive_whole_and_in_key_order() {
    for (bus, _dir) in buses().await {
        let topic = "agent.audit";
        let mut sub = bus.subscribe("readers", &[topic]).await.unwrap();
        let sent: Vec<Envelope> = (0..20).map(event).collect();
        for e in &sent {
            bus.publish(topic, "acme", e).await.unwrap();
        }
        for expected in &sent {
            let got = next(&mut sub).await;
            assert_eq!(&got.event, expected, "{}", bus.engine());
            assert_eq!(got.topic, topic);
            assert_eq!(got.key, "acme");
            sub.commit(&got).await.unwrap();
        }
    }
}

#[tokio::test]
async fn an_uncommitted_event_is_delivered_again_after_a_consumer_dies() {
    for (bus, _dir) in buses().await {
        let topic = "billing.usage";
        for n in 0..3 {
            bus.publish(topic, "acme", &event(n)).await.unwrap();
        }
        {
            let mut first = bus.subscribe("billing", &[topic]).await.unwrap();
            let d0 = next(&mut first).await;
            first.commit(&d0).await.unwrap();
            let d1 = next(&mut first).await;
            assert_eq!(d1.event.data["n"], 1);
            // The consumer dies here: d1 was handed out but never committed.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut second = bus.subscribe("billing", &[topic]).await.unwrap();
        let again = next(&mut second).await;
        assert_eq!(
            again.event.data["n"],
            1,
            "{}: the uncommitted event comes again",
            bus.engine()
        );
        second.commit(&again).await.unwrap();
        let d2 = next(&mut second).await;
        assert_eq!(d2.event.data["n"], 2);
        second.commit(&d2).await.unwrap();
        nothing_more(&mut second).await;
    }
}

#[tokio::test]
async fn each_group_gets_every_event() {
    for (bus, _dir) in buses().await {
        let topic = "conversation.events";
        bus.publish(topic, "s1", &event(7)).await.unwrap();
        let mut a = bus.subscribe("notification", &[topic]).await.unwrap();
        let mut b = bus.subscribe("analytics", &[topic]).await.unwrap();
        assert_eq!(next(&mut a).await.event.data["n"], 7);
        assert_eq!(next(&mut b).await.event.data["n"], 7);
    }
}

#[tokio::test]
async fn a_redelivered_event_is_handled_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("ledger.db"),
        },
        "ledger",
    )
    .await
    .unwrap();
    db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
    sqlx::raw_sql("CREATE TABLE ledger (event_id TEXT NOT NULL, amount BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    // Handle = claim + write in one transaction; commit the delivery afterwards.
    async fn handle(db: &Db, delivery: &Delivery) -> bool {
        let mut tx = db.begin().await.unwrap();
        let fresh = claim_event(&mut tx, "ledger", &delivery.event.id)
            .await
            .unwrap();
        if fresh {
            sqlx::query("INSERT INTO ledger (event_id, amount) VALUES ($1, $2)")
                .bind(delivery.event.id.to_string())
                .bind(delivery.event.data["n"].as_i64().unwrap())
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        fresh
    }
    for (bus, _bus_dir) in buses().await {
        let group = unique("ledger");
        let topic = "billing.usage";
        let usage = event(100);
        bus.publish(topic, "acme", &usage).await.unwrap();
        // A producer retry publishes the very same event (same id) again.
        bus.publish(topic, "acme", &usage).await.unwrap();
        {
            let mut sub = bus.subscribe(&group, &[topic]).await.unwrap();
            let d = next(&mut sub).await;
            assert!(handle(&db, &d).await);
            // Crash after the database commit, before the offset commit.
        }
        let mut sub = bus.subscribe(&group, &[topic]).await.unwrap();
        let redelivered = next(&mut sub).await;
        assert!(
            !handle(&db, &redelivered).await,
            "{}: handled twice",
            bus.engine()
        );
        sub.commit(&redelivered).await.unwrap();
        let duplicate = next(&mut sub).await;
        assert!(!handle(&db, &duplicate).await);
        sub.commit(&duplicate).await.unwrap();
        let total: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE event_id = $1")
                .bind(usage.id.to_string())
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert_eq!(total, 100, "{}", bus.engine());
    }
}

#[tokio::test]
async fn concurrent_publishes_are_all_delivered() {
    for (bus, _dir) in buses().await {
        let topic = "workflow.events";
        let publishers: Vec<_> = (0..200)
            .map(|n| {
                let bus = bus.clone();
                tokio::spawn(
                    async move { bus.publish(topic, &format!("k{}", n % 7), &event(n)).await },
                )
            })
            .collect();
        for p in publishers {
            p.await.unwrap().unwrap();
        }
        let mut sub = bus.subscribe("counter", &[topic]).await.unwrap();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 200 {
            let d = tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap_or_else(|_| panic!("{}: only {} of 200 arrived", bus.engine(), seen.len()))
                .unwrap();
            seen.insert(d.event.data["n"].as_u64().unwrap());
            sub.commit(&d).await.unwrap();
        }
        assert_eq!(seen.len(), 200, "{}", bus.engine());
    }
}

#[tokio::test]
async fn the_local_log_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let url = EventsUrl::Local { path: None };
    {
        let bus = EventBus::connect(&url, dir.path()).await.unwrap();
        bus.publish("agent.audit", "acme", &event(1)).await.unwrap();
    }
    let bus = EventBus::connect(&url, dir.path()).await.unwrap();
    let mut sub = bus.subscribe("late", &["agent.audit"]).await.unwrap();
    assert_eq!(next(&mut sub).await.event.data["n"], 1);
}

/// Two processes on one log file: a subscription in one gets what the other
/// publishes, both while its own process is quiet (the watcher finds it) and while its
/// own process writes to other topics (the gap in its own batch's numbers shows it).
#[tokio::test]
async fn the_local_log_delivers_what_another_process_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let url = EventsUrl::Local { path: None };
    let here = EventBus::connect(&url, dir.path()).await.unwrap();
    let there = EventBus::connect(&url, dir.path()).await.unwrap();
    let mut sub = here.subscribe("watching", &["agent.audit"]).await.unwrap();

    there
        .publish("agent.audit", "acme", &event(1))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
    assert_eq!(
        first
            .expect("woken for the other process")
            .unwrap()
            .event
            .data["n"],
        1
    );

    for n in 2..=3 {
        there
            .publish("agent.audit", "acme", &event(n))
            .await
            .unwrap();
        here.publish("billing.usage", "acme", &event(100 + n))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
        assert_eq!(got.expect("woken").unwrap().event.data["n"], n);
    }
    nothing_more(&mut sub).await;
}

#[tokio::test]
async fn bad_subscriptions_and_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, dir.path())
        .await
        .unwrap();
    assert!(bus.subscribe("", &["agent.audit"]).await.is_err());
    assert!(bus.subscribe("g", &[]).await.is_err());
    let unknown = EventBus::connect(
        &"kafka://127.0.0.1:1?colour=red".parse().unwrap(),
        dir.path(),
    )
    .await;
    assert!(unknown.err().unwrap().to_string().contains("colour"));
}

/// Set in a child copy of this test binary that acts as a consumer and gets killed.
const CHILD: &str = "SOMAGENT_TEST_CHILD_CONSUMER";

/// In the child: take one event without committing it, say so, and wait to be killed.
#[tokio::test]
async fn child_consumer() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (url, dir, group) = {
        let mut parts = spec.splitn(3, '|');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let bus = EventBus::connect(&url.parse().unwrap(), std::path::Path::new(&dir))
        .await
        .unwrap();
    let mut sub = bus
        .subscribe(&group, &["agent.notifications"])
        .await
        .unwrap();
    let got = next(&mut sub).await;
    println!("GOT {}", got.event.data["n"]);
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test]
async fn an_event_held_by_a_killed_consumer_process_is_delivered_again() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec!["local://".to_owned()];
    if let Some(url) = real_url("EVENTS") {
        urls.push(format!("{url}?prefix={}.", unique("kill")));
    }
    for url in urls {
        let bus = EventBus::connect(&url.parse().unwrap(), dir.path())
            .await
            .unwrap();
        let group = unique("notifier");
        bus.publish("agent.notifications", "acme", &event(5))
            .await
            .unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "events::child_consumer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, format!("{url}|{}|{group}", dir.path().display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            // libtest prints `test <name> ... ` before the test's own output, unterminated.
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.find("GOT ").map(|at| l[at..].to_owned()))
        });
        let line = match tokio::time::timeout(WAIT, line).await {
            Ok(line) => line.unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("{url}: the child consumer took no event in time");
            }
        };
        assert_eq!(line.as_deref(), Some("GOT 5"), "{url}");
        child.kill().unwrap(); // SIGKILL: no commit, no goodbye to the group.
        child.wait().unwrap();
        let mut sub = bus
            .subscribe(&group, &["agent.notifications"])
            .await
            .unwrap();
        let again = next(&mut sub).await;
        assert_eq!(
            again.event.data["n"],
            5,
            "{}: delivered again after the kill",
            bus.engine()
        );
        sub.commit(&again).await.unwrap();
    }
}

/// The one consumer loop: a flaky handler is retried, a poison event goes to
/// `<topic>.dlq` with why and the group moves past it, an event handled once is not
/// handled again (even when published twice), and a stop leaves the loop at once.
#[tokio::test]
async fn the_consumer_loop_retries_dead_letters_and_handles_each_event_once() {
    use std::sync::{Arc, Mutex};

    use somagent_common::infra::events::{
        ConsumeOptions, ConsumerMetrics, HandleError, consume, dead_letter_topic,
    };

    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("consumer.db"),
        },
        "consumer",
    )
    .await
    .unwrap();
    db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
    for (bus, _bus_dir) in buses().await {
        let group = unique("loop");
        let topic = "agent.audit";
        let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
        let tries: Arc<Mutex<u32>> = Arc::default();
        let (s, t) = (seen.clone(), tries.clone());
        let handler = move |d: Delivery| {
            let (seen, tries) = (s.clone(), t.clone());
            async move {
                let n = d.event.data["n"].as_u64().unwrap() as u32;
                match n {
                    // Fails twice, then passes.
                    1 => {
                        let mut tries = tries.lock().unwrap();
                        *tries += 1;
                        if *tries < 3 {
                            return Err(HandleError::Transient("not yet".into()));
                        }
                    }
                    2 => return Err(HandleError::Poison("cannot read this".into())),
                    _ => {}
                }
                seen.lock().unwrap().push(n);
                Ok(())
            }
        };
        let metrics = somagent_common::metrics::Metrics::new("test");
        let stopping = somagent_common::CancellationToken::new();
        let options = ConsumeOptions::new(stopping.clone())
            .attempts(3, Duration::from_millis(10))
            .handled_in(db.clone())
            .metrics(ConsumerMetrics::register(&metrics));
        let mut letters = bus
            .subscribe(&unique("dlq-readers"), &[&dead_letter_topic(topic)])
            .await
            .unwrap();
        let running = tokio::spawn(
            consume(&bus, &group, &[topic], handler, options)
                .await
                .unwrap(),
        );
        let again = event(3);
        for e in [event(1), event(2), again.clone(), again] {
            bus.publish(topic, "acme", &e).await.unwrap();
        }
        let letter = next(&mut letters).await;
        assert_eq!(
            letter.event.data["event"]["data"]["n"],
            2,
            "{}",
            bus.engine()
        );
        assert_eq!(letter.event.data["error"], "cannot read this");
        assert_eq!(letter.event.data["poison"], true);
        let deadline = std::time::Instant::now() + WAIT;
        while seen.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: {:?}",
                bus.engine(),
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [1, 3],
            "{}: once each, in order",
            bus.engine()
        );
        assert_eq!(*tries.lock().unwrap(), 3);
        let text = metrics.encode();
        assert!(
            text.contains("somagent_consumer_dead_letters_total"),
            "{text}"
        );
        assert!(text.contains("somagent_consumer_retries_total"), "{text}");
        stopping.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the loop stops when told")
            .unwrap();
    }
}

/// A batch consumer told to linger takes what arrives while it waits into the same
/// batch, handles it at once and commits it: the group's next consumer gets none of it.
#[tokio::test]
async fn a_lingering_batch_gathers_what_arrives_while_it_waits() {
    use std::sync::{Arc, Mutex};

    use somagent_common::infra::events::{
        BatchHandler, ConsumeOptions, HandleError, consume_batches,
    };

    struct Sizes(Arc<Mutex<Vec<usize>>>);
    impl BatchHandler for Sizes {
        async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
            self.0.lock().unwrap().push(deliveries.len());
            Ok(())
        }
    }

    for (bus, _dir) in buses().await {
        let (group, topic) = (unique("lingering"), "billing.usage");
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let stopping = somagent_common::CancellationToken::new();
        let options = ConsumeOptions::new(stopping.clone()).linger(Duration::from_secs(1));
        let running = tokio::spawn(
            consume_batches(&bus, &group, &[topic], Sizes(sizes.clone()), 100, options)
                .await
                .unwrap(),
        );
        bus.publish(topic, "acme", &event(0)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for n in 1..6 {
            bus.publish(topic, "acme", &event(n)).await.unwrap();
        }
        let deadline = std::time::Instant::now() + WAIT;
        while sizes.lock().unwrap().iter().sum::<usize>() < 6 {
            assert!(std::time::Instant::now() < deadline, "{}", bus.engine());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*sizes.lock().unwrap(), [6], "{}: one batch", bus.engine());
        stopping.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the loop stops when told")
            .unwrap();
        // Kafka's commit is sent as the consumer leaves; let it land.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut after = bus.subscribe(&group, &[topic]).await.unwrap();
        nothing_more(&mut after).await;
    }
}
