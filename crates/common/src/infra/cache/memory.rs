//! The in-process cache: one map behind a mutex held only for short, non-async
//! sections. Expired entries are dropped when read and swept now and then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{CacheError, Lock};

enum Value {
    Bytes(Vec<u8>),
    Counter(i64),
    Lock(u64),
}

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    writes_since_sweep: usize,
}

#[derive(Clone)]
pub struct MemoryCache {
    state: Arc<Mutex<State>>,
    /// Fencing tokens only grow, whatever lock they are for.
    fence: Arc<AtomicU64>,
    /// Published messages, for this process's listeners.
    published: tokio::sync::broadcast::Sender<(String, Vec<u8>)>,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            fence: Arc::default(),
            published: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

/// Whether `channel` matches `pattern`: exactly, or by prefix when the pattern ends in
/// `*` (the one form of Redis glob the platform uses).
fn matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => channel == pattern,
    }
}

/// Sweep expired entries after this many writes.
const SWEEP_EVERY: usize = 4096;

impl MemoryCache {
    /// Hands each message to this process's listeners; fire and forget.
    pub fn publish(&self, messages: &[(String, Vec<u8>)]) {
        for message in messages {
            let _ = self.published.send(message.clone());
        }
    }

    /// Messages published in this process from now on to channels matching `pattern`,
    /// for as long as the receiver is kept; a listener that falls behind misses some.
    pub fn listen(&self, pattern: &str) -> tokio::sync::mpsc::Receiver<(String, Vec<u8>)> {
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let mut published = self.published.subscribe();
        let pattern = pattern.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    message = published.recv() => match message {
                        Ok(message) if matches(&pattern, &message.0) => {
                            let _ = tx.try_send(message);
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        rx
    }

    fn with<R>(&self, f: impl FnOnce(&mut State, Instant) -> R) -> R {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        f(&mut state, now)
    }

    fn write(state: &mut State, now: Instant, key: &str, entry: Entry) {
        state.entries.insert(key.to_owned(), entry);
        state.writes_since_sweep += 1;
        if state.writes_since_sweep >= SWEEP_EVERY {
            state.entries.retain(|_, e| e.live(now));
            state.writes_since_sweep = 0;
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.with(|state, now| match state.entries.get(key) {
            Some(entry) if entry.live(now) => match &entry.value {
                Value::Bytes(b) => Some(b.clone()),
                Value::Counter(n) => Some(n.to_string().into_bytes()),
                Value::Lock(t) => Some(t.to_string().into_bytes()),
            },
            _ => None,
        })
    }

    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) {
        self.with(|state, now| {
            let entry = Entry {
                value: Value::Bytes(value.to_vec()),
                expires: ttl.map(|t| now + t),
            };
            Self::write(state, now, key, entry);
        });
    }

    pub fn delete(&self, key: &str) -> bool {
        self.with(|state, now| state.entries.remove(key).is_some_and(|e| e.live(now)))
    }

    pub fn incr(&self, key: &str, by: i64, window: Duration) -> Result<i64, CacheError> {
        self.with(|state, now| {
            let current = match state.entries.get_mut(key) {
                Some(entry) if entry.live(now) => match &mut entry.value {
                    Value::Counter(n) => {
                        *n += by;
                        return Ok(*n);
                    }
                    Value::Bytes(b) => std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| CacheError(format!("{key} does not hold a number")))?,
                    Value::Lock(_) => return Err(CacheError(format!("{key} is a lock"))),
                },
                _ => 0,
            };
            let value = current + by;
            let expires = match state.entries.get(key) {
                Some(entry) if entry.live(now) => entry.expires,
                _ => Some(now + window),
            };
            Self::write(
                state,
                now,
                key,
                Entry {
                    value: Value::Counter(value),
                    expires,
                },
            );
            Ok(value)
        })
    }

    pub fn ttl(&self, key: &str) -> Option<Duration> {
        self.with(|state, now| {
            state
                .entries
                .get(key)
                .filter(|e| e.live(now))
                .and_then(|e| e.expires)
                .map(|at| at - now)
        })
    }

    pub fn try_lock(&self, name: &str, ttl: Duration) -> Option<Lock> {
        let key = format!("lock:{name}");
        self.with(|state, now| {
            if state.entries.get(&key).is_some_and(|e| e.live(now)) {
                return None;
            }
            let token = self.fence.fetch_add(1, Ordering::SeqCst) + 1;
            Self::write(
                state,
                now,
                &key,
                Entry {
                    value: Value::Lock(token),
                    expires: Some(now + ttl),
                },
            );
            Some(Lock {
                name: name.to_owned(),
                token,
            })
        })
    }

    pub fn unlock(&self, lock: &Lock) -> bool {
        let key = format!("lock:{}", lock.name);
        self.with(|state, now| {
            let held = state.entries.get(&key).is_some_and(|e| {
                e.live(now) && matches!(e.value, Value::Lock(t) if t == lock.token)
            });
            if held {
                state.entries.remove(&key);
            }
            held
        })
    }
}
