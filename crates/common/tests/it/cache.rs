use std::time::Duration;

use somagent_common::config::CacheUrl;
use somagent_common::infra::cache::Cache;

use crate::helpers::{real_url, unique};

async fn caches() -> Vec<Cache> {
    let mut all = vec![Cache::connect(&CacheUrl::Memory).await.unwrap()];
    if let Some(url) = real_url("CACHE") {
        all.push(Cache::connect(&url.parse().unwrap()).await.unwrap());
    }
    all
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    for cache in caches().await {
        let (forever, brief) = (unique("k"), unique("k"));
        cache.set(&forever, b"v1", None).await.unwrap();
        cache
            .set(&brief, b"v2", Some(Duration::from_millis(300)))
            .await
            .unwrap();
        assert_eq!(
            cache.get(&forever).await.unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(
            cache.get(&brief).await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        let left = cache.ttl(&brief).await.unwrap().expect("a ttl");
        assert!(left <= Duration::from_millis(300), "{}", cache.engine());
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(cache.get(&brief).await.unwrap(), None, "{}", cache.engine());
        assert!(cache.delete(&forever).await.unwrap());
        assert!(!cache.delete(&forever).await.unwrap());
        assert_eq!(cache.get(&forever).await.unwrap(), None);
    }
}

#[tokio::test]
async fn counters_are_atomic_under_concurrency_and_reset_with_their_window() {
    for cache in caches().await {
        let key = unique("rate");
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (cache, key) = (cache.clone(), key.clone());
                tokio::spawn(async move {
                    cache
                        .incr(&key, 1, Duration::from_millis(600))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap());
        }
        values.sort_unstable();
        assert_eq!(
            values,
            (1..=100).collect::<Vec<_>>(),
            "{}: every increment seen once",
            cache.engine()
        );
        // Later increments do not extend the window.
        tokio::time::sleep(Duration::from_millis(300)).await;
        cache
            .incr(&key, 1, Duration::from_millis(600))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(
            cache
                .incr(&key, 1, Duration::from_millis(600))
                .await
                .unwrap(),
            1,
            "{}",
            cache.engine()
        );
    }
}

#[tokio::test]
async fn a_lock_has_one_holder_and_fencing_tokens_grow() {
    for cache in caches().await {
        let name = unique("lock");
        let held = cache
            .try_lock(&name, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("free lock");
        assert!(
            cache
                .try_lock(&name, Duration::from_secs(5))
                .await
                .unwrap()
                .is_none(),
            "{}",
            cache.engine()
        );
        assert!(cache.unlock(&held).await.unwrap());
        assert!(
            !cache.unlock(&held).await.unwrap(),
            "a released lock is not released twice"
        );
        let next = cache
            .try_lock(&name, Duration::from_millis(200))
            .await
            .unwrap()
            .expect("free again");
        assert!(
            next.token > held.token,
            "{}: fencing tokens grow",
            cache.engine()
        );
        // The holder stalls past its expiry; someone else takes the lock, and the
        // stale holder can no longer release it.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let third = cache
            .try_lock(&name, Duration::from_secs(5))
            .await
            .unwrap()
            .expect("expired lock");
        assert!(third.token > next.token);
        assert!(
            !cache.unlock(&next).await.unwrap(),
            "{}: stale holder refused",
            cache.engine()
        );
        assert!(cache.unlock(&third).await.unwrap());
    }
}

#[tokio::test]
async fn many_contenders_get_the_lock_once() {
    for cache in caches().await {
        let name = unique("contended");
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, name) = (cache.clone(), name.clone());
                tokio::spawn(
                    async move { cache.try_lock(&name, Duration::from_secs(5)).await.unwrap() },
                )
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(winners, 1, "{}", cache.engine());
    }
}

#[tokio::test]
async fn a_redis_prefix_keeps_deployments_sharing_a_server_apart() {
    let Some(url) = real_url("CACHE") else {
        return;
    };
    let (a, b) = (unique("deploy_a"), unique("deploy_b"));
    let open = |prefix: &str| {
        let url = format!("{url}?prefix={prefix}");
        async move { Cache::connect(&url.parse().unwrap()).await.unwrap() }
    };
    let (first, second, bare) = (
        open(&a).await,
        open(&b).await,
        Cache::connect(&url.parse().unwrap()).await.unwrap(),
    );
    let key = unique("shared_name");
    first.set(&key, b"mine", None).await.unwrap();
    assert_eq!(second.get(&key).await.unwrap(), None);
    assert_eq!(
        first
            .incr("hits", 1, Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        second
            .incr("hits", 1, Duration::from_secs(60))
            .await
            .unwrap(),
        1
    );
    let held = first.try_lock(&key, Duration::from_secs(5)).await.unwrap();
    assert!(held.is_some());
    assert!(
        second
            .try_lock(&key, Duration::from_secs(5))
            .await
            .unwrap()
            .is_some()
    );
    // Under the hood the keys carry the prefix.
    assert_eq!(
        bare.get(&format!("{a}:{key}")).await.unwrap().as_deref(),
        Some(&b"mine"[..])
    );
    assert_eq!(
        first
            .get_many(&[key.clone(), unique("none")])
            .await
            .unwrap(),
        vec![Some(b"mine".to_vec()), None]
    );
    first.delete(&key).await.unwrap();
}

/// Pub/sub through the cache interface: a listener gets what is published to the
/// channels its pattern matches, in order, and nothing of other channels.
#[tokio::test]
async fn listeners_get_the_messages_of_their_channels_in_order() {
    for cache in caches().await {
        let room = unique("room");
        let mut listener = cache.listen(&format!("{room}:*"));
        // A Redis subscription takes a moment to be in place.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let messages = vec![
            (format!("{room}:a"), b"1".to_vec()),
            (unique("elsewhere"), b"x".to_vec()),
            (format!("{room}:b"), b"2".to_vec()),
        ];
        cache.publish(&messages).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let message = tokio::time::timeout(Duration::from_secs(5), listener.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: {got:?}", cache.engine()))
                .unwrap();
            got.push(message);
        }
        assert_eq!(
            got,
            [messages[0].clone(), messages[2].clone()],
            "{}",
            cache.engine()
        );
        let extra = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
        assert!(extra.is_err(), "{}: {extra:?}", cache.engine());
        assert_eq!(cache.is_shared(), cache.engine() == "redis");
    }
}
