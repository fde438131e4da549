//! What a query may ask: a period (bounded: every query reads what falls in it) and a
//! bucket size for series, both checked before any SQL is written.

use somagent_common::error::ApiError;

/// The longest period one query may cover.
pub const MAX_PERIOD_MS: i64 = 400 * 86_400_000;
/// The most buckets a series may have.
pub const MAX_BUCKETS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl Period {
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Self, ApiError> {
        if to_ms <= from_ms {
            return Err(ApiError::validation("to", "is after `from`"));
        }
        if to_ms - from_ms > MAX_PERIOD_MS {
            return Err(ApiError::validation(
                "from",
                "the period is at most 400 days",
            ));
        }
        Ok(Self { from_ms, to_ms })
    }
}

/// A series' bucket: `hour`, `day` or `week`, in ms; `None` for no series.
pub fn interval(name: &str, period: &Period) -> Result<Option<i64>, ApiError> {
    let ms = match name {
        "" => return Ok(None),
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        "week" => 7 * 86_400_000,
        _ => {
            return Err(ApiError::validation(
                "interval",
                "is minute, hour, day or week",
            ));
        }
    };
    if (period.to_ms - period.from_ms) / ms > MAX_BUCKETS {
        return Err(ApiError::validation(
            "interval",
            format!("gives more than {MAX_BUCKETS} buckets for this period; take a longer one"),
        ));
    }
    Ok(Some(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_intervals_are_bounded() {
        assert!(Period::new(10, 5).is_err());
        assert!(Period::new(0, MAX_PERIOD_MS + 1).is_err());
        let month = Period::new(0, 31 * 86_400_000).unwrap();
        assert_eq!(interval("day", &month).unwrap(), Some(86_400_000));
        assert_eq!(interval("", &month).unwrap(), None);
        assert!(interval("minute", &month).is_err(), "44,640 buckets");
        assert!(interval("fortnight", &month).is_err());
    }
}
