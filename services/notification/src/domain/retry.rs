//! When a failed webhook delivery is tried again: a schedule of growing delays, each
//! spread by ±20 % so that the deliveries an outage failed together do not all come
//! back at once. The default spans a little over a day, then the delivery is dead.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    /// The wait after the first failed try, the second, ...; one try per entry after
    /// the first, so `delays.len() + 1` tries in all.
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight tries over about 27 hours.
    fn default() -> Self {
        Self::from_secs(&[5, 300, 1800, 7200, 18_000, 36_000, 36_000])
    }
}

impl RetrySchedule {
    pub fn from_secs(secs: &[u64]) -> Self {
        Self {
            delays: secs.iter().map(|s| Duration::from_secs(*s)).collect(),
        }
    }

    /// Tries a delivery gets before it is dead.
    pub fn tries(&self) -> u32 {
        u32::try_from(self.delays.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// The wait before the next try after `failed` tries have failed, spread by
    /// `spread` (uniform in 0..1); `None` when that was the last.
    pub fn after(&self, failed: u32, spread: f64) -> Option<Duration> {
        let base = self
            .delays
            .get(usize::try_from(failed).ok()?.checked_sub(1)?)?;
        let factor = 0.8 + 0.4 * spread.clamp(0.0, 1.0);
        Some(base.mul_f64(factor))
    }
}

/// Uniform in 0..1: a retry's spread.
pub fn spread() -> f64 {
    let mut bytes = [0u8; 8];
    // A failed draw spreads nothing rather than stop a delivery.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spans_a_day_and_then_ends() {
        let s = RetrySchedule::default();
        assert_eq!(s.tries(), 8);
        assert_eq!(s.after(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.after(7, 0.5), Some(Duration::from_secs(36_000)));
        assert_eq!(s.after(8, 0.5), None);
        assert_eq!(s.after(0, 0.5), None);
        let total: Duration = (1..8).filter_map(|n| s.after(n, 0.5)).sum();
        assert!(total > Duration::from_secs(24 * 3600), "{total:?}");
    }

    #[test]
    fn spreads_cover_the_whole_range() {
        let draws: Vec<f64> = (0..2000).map(|_| spread()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(draws.iter().any(|d| *d < 0.1) && draws.iter().any(|d| *d > 0.9));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let s = RetrySchedule::from_secs(&[100]);
        assert_eq!(s.after(1, 0.0), Some(Duration::from_secs(80)));
        assert_eq!(s.after(1, 1.0), Some(Duration::from_secs(120)));
        assert_eq!(s.after(1, 7.0), Some(Duration::from_secs(120)));
    }
}
