//! Time as the wire shows it.

/// Unix seconds as RFC 3339 (`2026-11-25T17:00:00Z`); empty if out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Now, as RFC 3339.
pub fn rfc3339_now() -> String {
    rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())
}
