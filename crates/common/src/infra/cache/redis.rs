//! Redis through a reconnecting connection manager. Counters and lock release are Lua
//! scripts so each is one atomic step on the server. `?prefix=NAME` in the URL puts
//! every key (and pub/sub channel) under `NAME:`, so several deployments (or test
//! runs) can share a server.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{CacheError, Lock};

#[derive(Clone)]
pub struct RedisCache {
    /// For subscriptions, which need connections of their own.
    client: std::sync::Arc<redis::Client>,
    conn: ConnectionManager,
    /// Put before every key (empty, or `NAME:`).
    prefix: String,
    incr: Script,
    unlock: Script,
}

impl RedisCache {
    pub async fn connect(url: &str) -> Result<Self, CacheError> {
        let (url, prefix) = split_prefix(url)?;
        let client = redis::Client::open(url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client: std::sync::Arc::new(client),
            conn,
            prefix,
            incr: Script::new(
                "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) \
                 if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
                 return v",
            ),
            unlock: Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            ),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.conn.clone().get(self.key(key)).await?)
    }

    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // `MGET` with a vector answers a vector even for one key.
        Ok(redis::cmd("MGET")
            .arg(keys.iter().map(|k| self.key(k)).collect::<Vec<_>>())
            .query_async(&mut self.conn.clone())
            .await?)
    }

    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let key = self.key(key);
        match ttl {
            Some(ttl) => conn.pset_ex::<_, _, ()>(key, value, millis(ttl)).await?,
            None => conn.set::<_, _, ()>(key, value).await?,
        }
        Ok(())
    }

    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let removed: u64 = self.conn.clone().del(self.key(key)).await?;
        Ok(removed > 0)
    }

    pub async fn incr(&self, key: &str, by: i64, window: Duration) -> Result<i64, CacheError> {
        let mut conn = self.conn.clone();
        Ok(self
            .incr
            .key(self.key(key))
            .arg(by)
            .arg(millis(window))
            .invoke_async(&mut conn)
            .await?)
    }

    /// `name` with this cache's key prefix, for scripts that build keys themselves.
    pub fn prefixed(&self, name: &str) -> String {
        self.key(name)
    }

    /// Runs `script` atomically on the server over `keys` (prefixed here) and `args`.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<T, CacheError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(self.key(key));
        }
        for arg in args {
            invocation.arg(arg);
        }
        Ok(invocation.invoke_async(&mut self.conn.clone()).await?)
    }

    /// The values of `fields` in the hash at `key`, in order.
    pub async fn hash_values(
        &self,
        key: &str,
        fields: &[&str],
    ) -> Result<Vec<Option<String>>, CacheError> {
        Ok(redis::cmd("HMGET")
            .arg(self.key(key))
            .arg(fields)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        let ms: i64 = self.conn.clone().pttl(self.key(key)).await?;
        Ok((ms >= 0).then(|| Duration::from_millis(ms as u64)))
    }

    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, CacheError> {
        let mut conn = self.conn.clone();
        let token: u64 = conn.incr(self.key(&format!("fence:{name}")), 1).await?;
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis(ttl)));
        let taken: Option<String> = conn
            .set_options(self.key(&format!("lock:{name}")), token, options)
            .await?;
        Ok(taken.map(|_| Lock {
            name: name.to_owned(),
            token,
        }))
    }

    pub async fn unlock(&self, lock: &Lock) -> Result<bool, CacheError> {
        let mut conn = self.conn.clone();
        let removed: i64 = self
            .unlock
            .key(self.key(&format!("lock:{}", lock.name)))
            .arg(lock.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    /// Publishes each `(channel, payload)`, in order, in one round trip. Fire and
    /// forget: only listeners connected now receive them.
    pub async fn publish(&self, messages: &[(String, Vec<u8>)]) -> Result<(), CacheError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in messages {
            pipe.cmd("PUBLISH")
                .arg(self.key(channel))
                .arg(payload.as_slice())
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Every message published from now on to a channel matching `pattern` (a Redis
    /// glob), as `(channel, payload)`, for as long as the receiver is kept. The
    /// subscription has a connection of its own and comes back after the server does;
    /// what is published while it is away is missed.
    pub fn listen(&self, pattern: &str) -> tokio::sync::mpsc::Receiver<(String, Vec<u8>)> {
        use futures::StreamExt;

        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let pattern = self.key(pattern);
        tokio::spawn(async move {
            let mut failures = 0u32;
            while !tx.is_closed() {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.psubscribe(&pattern).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                }
                .await;
                match subscribed {
                    Ok(pubsub) => {
                        failures = 0;
                        let mut dropped = 0u64;
                        let mut messages = pubsub.into_on_message();
                        loop {
                            tokio::select! {
                                () = tx.closed() => return,
                                message = messages.next() => {
                                    let Some(message) = message else { break };
                                    let channel = message.get_channel_name();
                                    let channel = channel.strip_prefix(&prefix).unwrap_or(channel).to_owned();
                                    // A full receiver drops: listeners want what is live.
                                    if tx.try_send((channel, message.get_payload_bytes().to_vec())).is_err() {
                                        dropped += 1;
                                        if dropped.is_power_of_two() {
                                            tracing::warn!(%pattern, dropped, "a Redis subscriber falls behind; dropping messages");
                                        }
                                    }
                                }
                            }
                        }
                        tracing::warn!(%pattern, "the Redis subscription ended; subscribing again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(%pattern, error = %e, "cannot subscribe on Redis; retrying");
                        }
                        tokio::time::sleep(Duration::from_millis(
                            200 * u64::from(failures.min(10)),
                        ))
                        .await;
                    }
                }
            }
        });
        rx
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

/// The URL without its `prefix` option, and the key prefix it named (`NAME:`).
fn split_prefix(raw: &str) -> Result<(String, String), CacheError> {
    let mut url =
        url::Url::parse(raw).map_err(|e| CacheError(format!("invalid Redis URL: {e}")))?;
    let mut prefix = String::new();
    let rest: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, v)| {
            if k == "prefix" {
                prefix = format!("{v}:");
                false
            } else {
                true
            }
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if rest.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(rest);
    }
    Ok((url.to_string(), prefix))
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}
