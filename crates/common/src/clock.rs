//! The one clock: what the stores write (Unix seconds or milliseconds) and what the
//! wire shows (RFC 3339).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in Unix seconds: what tokens (`exp`, `iat`) and most rows record.
pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in Unix milliseconds: for ordering that seconds would blur (journals, leases,
/// outbox, a cutoff compared with a UUIDv7's issue time).
pub fn unix_now_ms() -> i64 {
    // In i128 until after the division: the nanoseconds leave i64 in the year 2262.
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix seconds as RFC 3339 (`2026-11-25T17:00:00Z`); empty if out of range.
pub fn rfc3339(unix: i64) -> String {
    format(OffsetDateTime::from_unix_timestamp(unix).ok())
}

/// Unix milliseconds as RFC 3339 (`2026-11-25T17:00:00.25Z`); empty if out of range.
pub fn rfc3339_ms(ms: i64) -> String {
    // i64 milliseconds times 10^6 stays far inside i128.
    format(OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
}

/// Now, as RFC 3339.
pub fn rfc3339_now() -> String {
    rfc3339(unix_now())
}

fn format(at: Option<OffsetDateTime>) -> String {
    at.and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_format_alike() {
        assert_eq!(rfc3339(1_795_626_000), "2026-11-25T17:00:00Z");
        assert_eq!(rfc3339_ms(1_795_626_000_000), "2026-11-25T17:00:00Z");
        assert_eq!(rfc3339_ms(1_795_626_000_250), "2026-11-25T17:00:00.25Z");
    }

    #[test]
    fn out_of_range_is_empty() {
        assert_eq!(rfc3339(i64::MAX), "");
        assert_eq!(rfc3339_ms(i64::MAX), "");
    }
}
