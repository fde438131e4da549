//! Budget counters: what each budget spent and holds reserved this period, changed by
//! one atomic step per reservation, settlement, release or expiry, so concurrent calls
//! can never together hold more than a budget's room.
//!
//! In process (one billing process, `somagent up`) they live behind a mutex; with Redis
//! every replica shares them through Lua scripts. Either way a counter seen for the
//! first time in a process (or lost by Redis) starts from the spend the database keeps
//! ([`crate::budgets::BudgetStore::spent`]); reservations themselves are not kept
//! durably: a crashed billing process gives them back, as their expiry would.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use somagent_common::infra::cache::{CacheError, RedisCache, Script};

/// How long an expired reservation is remembered, so a caller that settles late still
/// counts its spend.
pub const KEEP_EXPIRED_MS: i64 = 3_600_000;

/// One budget a reservation is held against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `tenant|budget key|period label`.
    #[serde(rename = "c")]
    pub counter: String,
    #[serde(rename = "a")]
    pub amount: i64,
    /// Counts tokens (true) or money.
    #[serde(rename = "t")]
    pub tokens: bool,
    #[serde(rename = "l")]
    pub limit: i64,
    /// How long the counter is worth keeping after its period began (ms; 0 = always).
    #[serde(rename = "k")]
    pub keep_ms: i64,
}

impl Line {
    fn actual(&self, tokens: i64, micros: i64) -> i64 {
        if self.tokens { tokens } else { micros }.max(0)
    }
}

/// Why a reservation did not fit: the line and what its counter held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    pub spent: i64,
    pub reserved: i64,
}

/// A settled line's spend before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub counter: String,
    pub before: i64,
    pub after: i64,
    pub actual: i64,
}

/// The outcome of an attempt to reserve.
#[derive(Debug)]
pub enum Reserved {
    Held,
    Refused(Refusal),
    /// These counters are not loaded yet: load their spend and try again.
    Missing(Vec<usize>),
}

#[derive(Clone)]
pub enum Counters {
    Local(Arc<LocalCounters>),
    Redis(RedisCounters),
}

impl Counters {
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Local(_) => "in process",
            Self::Redis(_) => "redis",
        }
    }

    pub async fn reserve(
        &self,
        id: &str,
        tenant: &str,
        lines: &[Line],
        expires_at_ms: i64,
    ) -> Result<Reserved, CacheError> {
        match self {
            Self::Local(c) => Ok(c.reserve(id, tenant, lines, expires_at_ms)),
            Self::Redis(c) => c.reserve(id, tenant, lines, expires_at_ms).await,
        }
    }

    /// Starts `counter` at `spent` unless it is already there.
    pub async fn load(&self, line: &Line, spent: i64) -> Result<(), CacheError> {
        match self {
            Self::Local(c) => {
                c.load(&line.counter, spent);
                Ok(())
            }
            Self::Redis(c) => c.load(line, spent).await,
        }
    }

    /// The lines' spend moved by the real use, or `None` when the reservation is not
    /// there (unknown, another tenant's, or already settled or released).
    pub async fn settle(
        &self,
        id: &str,
        tenant: &str,
        tokens: i64,
        micros: i64,
    ) -> Result<Option<Vec<Moved>>, CacheError> {
        match self {
            Self::Local(c) => Ok(c.settle(id, tenant, tokens, micros)),
            Self::Redis(c) => c.settle(id, tenant, tokens, micros).await,
        }
    }

    pub async fn release(&self, id: &str, tenant: &str) -> Result<bool, CacheError> {
        match self {
            Self::Local(c) => Ok(c.release(id, tenant)),
            Self::Redis(c) => c.release(id, tenant).await,
        }
    }

    /// Gives back reservations whose time ran out; how many.
    pub async fn expire(&self, now_ms: i64) -> Result<usize, CacheError> {
        match self {
            Self::Local(c) => Ok(c.expire(now_ms)),
            Self::Redis(c) => c.expire(now_ms).await,
        }
    }

    /// (spent, reserved) of each counter, `None` for one not loaded.
    pub async fn read(&self, counters: &[String]) -> Result<Vec<Option<(i64, i64)>>, CacheError> {
        match self {
            Self::Local(c) => Ok(c.read(counters)),
            Self::Redis(c) => c.read(counters).await,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Held,
    /// Given back by its expiry; a late settle still counts the spend.
    Expired,
}

struct Reservation {
    tenant: String,
    lines: Vec<Line>,
    state: State,
    /// When it expires (held) or is forgotten (expired).
    until_ms: i64,
}

#[derive(Default)]
struct Book {
    /// counter -> (spent, reserved)
    counters: HashMap<String, (i64, i64)>,
    reservations: HashMap<String, Reservation>,
    /// (until_ms, id), to find the next to expire or forget.
    by_time: BTreeSet<(i64, String)>,
}

/// The counters in this process.
#[derive(Default)]
pub struct LocalCounters {
    book: Mutex<Book>,
}

impl LocalCounters {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve(&self, id: &str, tenant: &str, lines: &[Line], expires_at_ms: i64) -> Reserved {
        let mut book = self.book();
        let missing: Vec<usize> = (0..lines.len())
            .filter(|&i| !book.counters.contains_key(&lines[i].counter))
            .collect();
        if !missing.is_empty() {
            return Reserved::Missing(missing);
        }
        for (i, line) in lines.iter().enumerate() {
            let (spent, reserved) = book.counters[&line.counter];
            if spent.saturating_add(reserved).saturating_add(line.amount) > line.limit {
                return Reserved::Refused(Refusal {
                    line: i,
                    spent,
                    reserved,
                });
            }
        }
        for line in lines {
            if let Some(c) = book.counters.get_mut(&line.counter) {
                c.1 += line.amount;
            }
        }
        book.reservations.insert(
            id.to_owned(),
            Reservation {
                tenant: tenant.to_owned(),
                lines: lines.to_vec(),
                state: State::Held,
                until_ms: expires_at_ms,
            },
        );
        book.by_time.insert((expires_at_ms, id.to_owned()));
        Reserved::Held
    }

    fn load(&self, counter: &str, spent: i64) {
        self.book()
            .counters
            .entry(counter.to_owned())
            .or_insert((spent, 0));
    }

    fn take(book: &mut Book, id: &str, tenant: &str) -> Option<Reservation> {
        if book.reservations.get(id)?.tenant != tenant {
            return None;
        }
        let r = book.reservations.remove(id)?;
        book.by_time.remove(&(r.until_ms, id.to_owned()));
        Some(r)
    }

    fn settle(&self, id: &str, tenant: &str, tokens: i64, micros: i64) -> Option<Vec<Moved>> {
        let mut book = self.book();
        let r = Self::take(&mut book, id, tenant)?;
        let moved = r
            .lines
            .iter()
            .map(|line| {
                let actual = line.actual(tokens, micros);
                let c = book.counters.entry(line.counter.clone()).or_default();
                if r.state == State::Held {
                    c.1 -= line.amount;
                }
                let before = c.0;
                c.0 += actual;
                Moved {
                    counter: line.counter.clone(),
                    before,
                    after: c.0,
                    actual,
                }
            })
            .collect();
        Some(moved)
    }

    fn give_back(book: &mut Book, r: &Reservation) {
        if r.state == State::Held {
            for line in &r.lines {
                if let Some(c) = book.counters.get_mut(&line.counter) {
                    c.1 -= line.amount;
                }
            }
        }
    }

    fn release(&self, id: &str, tenant: &str) -> bool {
        let mut book = self.book();
        let Some(r) = Self::take(&mut book, id, tenant) else {
            return false;
        };
        Self::give_back(&mut book, &r);
        true
    }

    fn expire(&self, now_ms: i64) -> usize {
        let mut book = self.book();
        let mut expired = 0;
        while let Some((until, id)) = book.by_time.first().cloned() {
            if until > now_ms {
                break;
            }
            book.by_time.pop_first();
            let Some(mut r) = book.reservations.remove(&id) else {
                continue;
            };
            if r.state == State::Held {
                Self::give_back(&mut book, &r);
                expired += 1;
                r.state = State::Expired;
                r.until_ms = now_ms + KEEP_EXPIRED_MS;
                book.by_time.insert((r.until_ms, id.clone()));
                book.reservations.insert(id, r);
            }
        }
        expired
    }

    fn read(&self, counters: &[String]) -> Vec<Option<(i64, i64)>> {
        let book = self.book();
        counters
            .iter()
            .map(|c| book.counters.get(c).copied())
            .collect()
    }
}

/// The counters in Redis: `budget:c:<counter>` hashes (spent, reserved),
/// `budget:r:<id>` reservations and the `budget:expiries` sorted set. Each step is one
/// script, so replicas never interleave inside one.
#[derive(Clone)]
pub struct RedisCounters {
    redis: RedisCache,
    scripts: Arc<Scripts>,
}

struct Scripts {
    reserve: Script,
    load: Script,
    settle: Script,
    release: Script,
    expire: Script,
}

const COUNTER: &str = "budget:c:";
const RESERVATION: &str = "budget:r:";
const EXPIRIES: &str = "budget:expiries";

/// Gives a held reservation's amounts back to its counters (shared by release and
/// expiry). `prefix` is the counter keys' prefix.
const GIVE_BACK: &str = "
local function give_back(lines, prefix)
  for _, l in ipairs(lines) do
    redis.call('HINCRBY', prefix .. l.c, 'reserved', -l.a)
  end
end
";

impl RedisCounters {
    pub fn new(redis: RedisCache) -> Self {
        let scripts = Scripts {
            // KEYS: counters..., reservation, expiries. ARGV: id, tenant, expires_at,
            // lines json, keep_ms, then amount and limit per counter.
            reserve: Script::new(
                "local n = #KEYS - 2
                 local missing = {}
                 for i = 1, n do
                   if redis.call('EXISTS', KEYS[i]) == 0 then missing[#missing + 1] = i - 1 end
                 end
                 if #missing > 0 then return {'missing', cjson.encode(missing)} end
                 for i = 1, n do
                   local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
                   local spent, reserved = tonumber(v[1] or '0'), tonumber(v[2] or '0')
                   if spent + reserved + tonumber(ARGV[4 + 2 * i]) > tonumber(ARGV[5 + 2 * i]) then
                     return {'refused', tostring(i - 1), tostring(spent), tostring(reserved)}
                   end
                 end
                 for i = 1, n do
                   redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[4 + 2 * i])
                 end
                 redis.call('HSET', KEYS[n + 1], 'tenant', ARGV[2], 'state', 'held', 'lines', ARGV[4])
                 redis.call('PEXPIREAT', KEYS[n + 1], tonumber(ARGV[3]) + tonumber(ARGV[5]))
                 redis.call('ZADD', KEYS[n + 2], ARGV[3], ARGV[1])
                 return {'held'}",
            ),
            // KEYS: counter. ARGV: spent, keep_ms (0: no expiry).
            load: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then
                   redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
                   if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                 end
                 return 1",
            ),
            // KEYS: reservation, expiries. ARGV: id, tenant, tokens, micros, counter prefix.
            settle: Script::new(
                "local r = redis.call('HMGET', KEYS[1], 'tenant', 'state', 'lines')
                 if not r[1] or r[1] ~= ARGV[2] or (r[2] ~= 'held' and r[2] ~= 'expired') then
                   return false
                 end
                 local out = {}
                 for _, l in ipairs(cjson.decode(r[3])) do
                   local key = ARGV[5] .. l.c
                   local actual = tonumber(l.t and ARGV[3] or ARGV[4])
                   if actual < 0 then actual = 0 end
                   if r[2] == 'held' then redis.call('HINCRBY', key, 'reserved', -l.a) end
                   local before = tonumber(redis.call('HGET', key, 'spent') or '0')
                   local after = redis.call('HINCRBY', key, 'spent', actual)
                   for _, v in ipairs({l.c, string.format('%d', before), string.format('%d', after), string.format('%d', actual)}) do
                     out[#out + 1] = v
                   end
                 end
                 redis.call('HSET', KEYS[1], 'state', 'settled')
                 redis.call('ZREM', KEYS[2], ARGV[1])
                 return out",
            ),
            // KEYS: reservation, expiries. ARGV: id, tenant, counter prefix.
            release: Script::new(&format!(
                "{GIVE_BACK}
                 local r = redis.call('HMGET', KEYS[1], 'tenant', 'state', 'lines')
                 if not r[1] or r[1] ~= ARGV[2] or (r[2] ~= 'held' and r[2] ~= 'expired') then
                   return 0
                 end
                 if r[2] == 'held' then give_back(cjson.decode(r[3]), ARGV[3]) end
                 redis.call('HSET', KEYS[1], 'state', 'released')
                 redis.call('ZREM', KEYS[2], ARGV[1])
                 return 1"
            )),
            // KEYS: expiries. ARGV: now, counter prefix, reservation prefix, keep_ms.
            expire: Script::new(&format!(
                "{GIVE_BACK}
                 local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
                 local n = 0
                 for _, id in ipairs(ids) do
                   local key = ARGV[3] .. id
                   local r = redis.call('HMGET', key, 'state', 'lines')
                   if r[1] == 'held' then
                     give_back(cjson.decode(r[2]), ARGV[2])
                     redis.call('HSET', key, 'state', 'expired')
                     redis.call('PEXPIRE', key, ARGV[4])
                     n = n + 1
                   end
                   redis.call('ZREM', KEYS[1], id)
                 end
                 return n"
            )),
        };
        Self {
            redis,
            scripts: Arc::new(scripts),
        }
    }

    async fn reserve(
        &self,
        id: &str,
        tenant: &str,
        lines: &[Line],
        expires_at_ms: i64,
    ) -> Result<Reserved, CacheError> {
        let mut keys: Vec<String> = lines
            .iter()
            .map(|l| format!("{COUNTER}{}", l.counter))
            .collect();
        keys.push(format!("{RESERVATION}{id}"));
        keys.push(EXPIRIES.into());
        let mut args = vec![
            id.to_owned(),
            tenant.to_owned(),
            expires_at_ms.to_string(),
            serde_json::to_string(lines).map_err(|e| CacheError(e.to_string()))?,
            KEEP_EXPIRED_MS.to_string(),
        ];
        for line in lines {
            args.push(line.amount.to_string());
            args.push(line.limit.to_string());
        }
        let answer: Vec<String> = self.redis.run(&self.scripts.reserve, &keys, &args).await?;
        let number = |i: usize| -> Result<i64, CacheError> {
            answer
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| CacheError(format!("the reserve script answered {answer:?}")))
        };
        match answer.first().map(String::as_str) {
            Some("held") => Ok(Reserved::Held),
            Some("refused") => Ok(Reserved::Refused(Refusal {
                line: number(1)? as usize,
                spent: number(2)?,
                reserved: number(3)?,
            })),
            Some("missing") => Ok(Reserved::Missing(
                answer
                    .get(1)
                    .and_then(|m| serde_json::from_str(m).ok())
                    .unwrap_or_default(),
            )),
            _ => Err(CacheError(format!(
                "the reserve script answered {answer:?}"
            ))),
        }
    }

    async fn load(&self, line: &Line, spent: i64) -> Result<(), CacheError> {
        let _: i64 = self
            .redis
            .run(
                &self.scripts.load,
                &[format!("{COUNTER}{}", line.counter)],
                &[spent.to_string(), line.keep_ms.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn settle(
        &self,
        id: &str,
        tenant: &str,
        tokens: i64,
        micros: i64,
    ) -> Result<Option<Vec<Moved>>, CacheError> {
        // Flat: counter, before, after, actual for each line (numbers as text: Lua's
        // own would round past 2^53 and print big ones in exponent form).
        let answer: Option<Vec<String>> = self
            .redis
            .run(
                &self.scripts.settle,
                &[format!("{RESERVATION}{id}"), EXPIRIES.into()],
                &[
                    id.to_owned(),
                    tenant.to_owned(),
                    tokens.to_string(),
                    micros.to_string(),
                    self.redis.prefixed(COUNTER),
                ],
            )
            .await?;
        let Some(flat) = answer else {
            return Ok(None);
        };
        let number = |v: &String| {
            v.parse::<i64>()
                .map_err(|_| CacheError(format!("the settle script answered {flat:?}")))
        };
        flat.chunks(4)
            .map(|c| match c {
                [counter, before, after, actual] => Ok(Moved {
                    counter: counter.clone(),
                    before: number(before)?,
                    after: number(after)?,
                    actual: number(actual)?,
                }),
                _ => Err(CacheError(format!("the settle script answered {flat:?}"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    async fn release(&self, id: &str, tenant: &str) -> Result<bool, CacheError> {
        let released: i64 = self
            .redis
            .run(
                &self.scripts.release,
                &[format!("{RESERVATION}{id}"), EXPIRIES.into()],
                &[
                    id.to_owned(),
                    tenant.to_owned(),
                    self.redis.prefixed(COUNTER),
                ],
            )
            .await?;
        Ok(released == 1)
    }

    async fn expire(&self, now_ms: i64) -> Result<usize, CacheError> {
        let n: i64 = self
            .redis
            .run(
                &self.scripts.expire,
                &[EXPIRIES.into()],
                &[
                    now_ms.to_string(),
                    self.redis.prefixed(COUNTER),
                    self.redis.prefixed(RESERVATION),
                    KEEP_EXPIRED_MS.to_string(),
                ],
            )
            .await?;
        Ok(n as usize)
    }

    async fn read(&self, counters: &[String]) -> Result<Vec<Option<(i64, i64)>>, CacheError> {
        let mut out = Vec::with_capacity(counters.len());
        for counter in counters {
            let values = self
                .redis
                .hash_values(&format!("{COUNTER}{counter}"), &["spent", "reserved"])
                .await?;
            out.push(match values.as_slice() {
                [Some(spent), Some(reserved)] => Some((
                    spent.parse().unwrap_or_default(),
                    reserved.parse().unwrap_or_default(),
                )),
                _ => None,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(counter: &str, amount: i64, limit: i64) -> Line {
        Line {
            counter: counter.into(),
            amount,
            tokens: true,
            limit,
            keep_ms: 0,
        }
    }

    #[test]
    fn a_reservation_fits_every_line_or_none() {
        let c = LocalCounters::default();
        let lines = [line("t|a", 60, 100), line("t|b", 60, 1000)];
        assert!(matches!(c.reserve("r1", "t", &lines, 10), Reserved::Missing(m) if m == [0, 1]));
        c.load("t|a", 0);
        c.load("t|b", 0);
        assert!(matches!(c.reserve("r1", "t", &lines, 10), Reserved::Held));
        match c.reserve("r2", "t", &lines, 10) {
            Reserved::Refused(r) => assert_eq!(
                r,
                Refusal {
                    line: 0,
                    spent: 0,
                    reserved: 60
                }
            ),
            other => panic!("{other:?}"),
        }
        // Nothing of the refused one was held on the line that had room.
        assert_eq!(c.read(&["t|b".into()]), vec![Some((0, 60))]);
    }

    #[test]
    fn settle_counts_once_and_release_gives_back() {
        let c = LocalCounters::default();
        c.load("t|a", 10);
        let lines = [line("t|a", 50, 100)];
        assert!(matches!(c.reserve("r1", "t", &lines, 10), Reserved::Held));
        assert!(c.settle("r1", "other", 20, 0).is_none(), "another tenant's");
        let moved = c.settle("r1", "t", 20, 0).unwrap();
        assert_eq!((moved[0].before, moved[0].after), (10, 30));
        assert!(c.settle("r1", "t", 20, 0).is_none());
        assert_eq!(c.read(&["t|a".into()]), vec![Some((30, 0))]);
        assert!(matches!(c.reserve("r2", "t", &lines, 10), Reserved::Held));
        assert!(c.release("r2", "t"));
        assert!(!c.release("r2", "t"));
        assert_eq!(c.read(&["t|a".into()]), vec![Some((30, 0))]);
    }

    #[test]
    fn an_expired_reservation_is_given_back_and_still_settles_late() {
        let c = LocalCounters::default();
        c.load("t|a", 0);
        let lines = [line("t|a", 100, 100)];
        assert!(matches!(
            c.reserve("r1", "t", &lines, 1_000),
            Reserved::Held
        ));
        assert_eq!(c.expire(999), 0);
        assert_eq!(c.expire(1_000), 1);
        assert_eq!(c.read(&["t|a".into()]), vec![Some((0, 0))]);
        let moved = c.settle("r1", "t", 40, 0).unwrap();
        assert_eq!(moved[0].after, 40);
        assert_eq!(c.read(&["t|a".into()]), vec![Some((40, 0))]);
        // An expired reservation is remembered an hour, then forgotten.
        assert!(matches!(
            c.reserve("r2", "t", &[line("t|a", 10, 100)], 2_000),
            Reserved::Held
        ));
        c.expire(2_000);
        c.expire(2_000 + KEEP_EXPIRED_MS);
        assert!(c.settle("r2", "t", 1, 0).is_none());
    }
}
