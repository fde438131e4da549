//! The cache: values with a time to live, atomic counters for rate limits, and locks
//! with expiry and fencing tokens. In process for one machine, Redis when replicas must
//! share it (rate limits, revocations, locks).

mod attempts;
mod memory;
mod redis;

use std::time::Duration;

pub use self::attempts::{Attempt, AttemptLimit};
pub use self::memory::MemoryCache;
pub use self::redis::RedisCache;
/// A Lua script for [`RedisCache::run`].
pub use ::redis::Script;

use crate::config::CacheUrl;

#[derive(Debug, thiserror::Error)]
#[error("cache: {0}")]
pub struct CacheError(pub String);

impl From<::redis::RedisError> for CacheError {
    fn from(e: ::redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// A held lock. `token` increases with every grant of the same lock name, so a
/// resource that remembers the highest token it saw can refuse a stale holder whose
/// lock expired while it was paused (a fencing token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub name: String,
    pub token: u64,
}

#[derive(Clone)]
pub enum Cache {
    Memory(MemoryCache),
    Redis(RedisCache),
}

impl Cache {
    pub async fn connect(url: &CacheUrl) -> Result<Self, CacheError> {
        match url {
            CacheUrl::Memory => Ok(Self::Memory(MemoryCache::default())),
            CacheUrl::Redis(raw) => Ok(Self::Redis(RedisCache::connect(raw).await?)),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        match self {
            Self::Memory(c) => Ok(c.get(key)),
            Self::Redis(c) => c.get(key).await,
        }
    }

    /// The values at `keys`, in order, in one round trip.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        match self {
            Self::Memory(c) => Ok(keys.iter().map(|k| c.get(k)).collect()),
            Self::Redis(c) => c.get_many(keys).await,
        }
    }

    /// Stores `value`; with a `ttl` it disappears after that long.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        match self {
            Self::Memory(c) => {
                c.set(key, value, ttl);
                Ok(())
            }
            Self::Redis(c) => c.set(key, value, ttl).await,
        }
    }

    /// Removes `key`; true if it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        match self {
            Self::Memory(c) => Ok(c.delete(key)),
            Self::Redis(c) => c.delete(key).await,
        }
    }

    /// Adds `by` to the counter at `key` and returns the new value. A counter created
    /// by this call expires after `window` (a fixed rate-limit window).
    pub async fn incr(&self, key: &str, by: i64, window: Duration) -> Result<i64, CacheError> {
        match self {
            Self::Memory(c) => c.incr(key, by, window),
            Self::Redis(c) => c.incr(key, by, window).await,
        }
    }

    /// Time left before `key` expires, if it exists and has an expiry.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        match self {
            Self::Memory(c) => Ok(c.ttl(key)),
            Self::Redis(c) => c.ttl(key).await,
        }
    }

    /// Takes the lock `name` for `ttl` if nobody holds it.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<Lock>, CacheError> {
        match self {
            Self::Memory(c) => Ok(c.try_lock(name, ttl)),
            Self::Redis(c) => c.try_lock(name, ttl).await,
        }
    }

    /// Releases `lock` if it is still the holder; false if it had expired or passed on.
    pub async fn unlock(&self, lock: &Lock) -> Result<bool, CacheError> {
        match self {
            Self::Memory(c) => Ok(c.unlock(lock)),
            Self::Redis(c) => c.unlock(lock).await,
        }
    }

    /// A round trip to the cache, for readiness.
    pub async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(c) => c.ping().await,
        }
    }

    pub fn engine(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Whether other processes share this cache (and so its messages).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Publishes each `(channel, payload)`, in order: to every process's listeners on
    /// Redis, to this process's in memory. Fire and forget: only listeners connected
    /// now receive them.
    pub async fn publish(&self, messages: &[(String, Vec<u8>)]) -> Result<(), CacheError> {
        match self {
            Self::Memory(c) => {
                c.publish(messages);
                Ok(())
            }
            Self::Redis(c) => c.publish(messages).await,
        }
    }

    /// Every message published from now on to a channel matching `pattern` (exact, or
    /// a prefix ending in `*`), as `(channel, payload)`, for as long as the receiver is
    /// kept. What is published while a Redis subscription is away is missed.
    pub fn listen(&self, pattern: &str) -> tokio::sync::mpsc::Receiver<(String, Vec<u8>)> {
        match self {
            Self::Memory(c) => c.listen(pattern),
            Self::Redis(c) => c.listen(pattern),
        }
    }
}

impl crate::readiness::Probe for Cache {
    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}
