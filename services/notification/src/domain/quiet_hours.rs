//! Quiet hours: a daily window in the user's own time zone when email waits (a
//! critical notification does not). The window may cross midnight (22:00 to 07:00);
//! when it ends is computed in the zone, so a daylight-saving change moves it with the
//! user's clock.

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde_json::Value;

/// When the quiet hours `quiet` (`{enabled, start, end, time_zone}`) that hold at `now`
/// end; `None` when it is not quiet now (or the hours are off, empty or unreadable).
pub fn quiet_until(quiet: &Value, now: Timestamp) -> Option<Timestamp> {
    if quiet["enabled"] != true {
        return None;
    }
    let start = clock(quiet["start"].as_str()?)?;
    let end = clock(quiet["end"].as_str()?)?;
    if start == end {
        return None;
    }
    let zone = quiet["time_zone"]
        .as_str()
        .and_then(|name| TimeZone::get(name).ok())
        .unwrap_or(TimeZone::UTC);
    let here: Zoned = now.to_zoned(zone.clone());
    let t = here.time();
    let today = here.date();
    let ends_on = if start < end {
        // 13:00-14:00: quiet within the day.
        (start <= t && t < end).then_some(today)?
    } else if t >= start {
        // 22:00-07:00, evening: it ends tomorrow morning.
        today.tomorrow().ok()?
    } else if t < end {
        // 22:00-07:00, early morning: it ends this morning.
        today
    } else {
        return None;
    };
    ends_on
        .to_datetime(end)
        .to_zoned(zone)
        .ok()
        .map(|z| z.timestamp())
}

fn clock(text: &str) -> Option<Time> {
    let (h, m) = text.split_once(':')?;
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().unwrap()
    }

    #[test]
    fn a_window_across_midnight_ends_the_next_morning_in_the_users_zone() {
        let quiet =
            json!({"enabled": true, "start": "22:00", "end": "07:00", "time_zone": "Europe/Paris"});
        // 23:30 in Paris (UTC+1 in winter): quiet until 07:00 Paris the next day.
        assert_eq!(
            quiet_until(&quiet, at("2026-12-07T22:30:00Z")),
            Some(at("2026-12-08T06:00:00Z"))
        );
        // 05:00 in Paris: until 07:00 the same day.
        assert_eq!(
            quiet_until(&quiet, at("2026-12-08T04:00:00Z")),
            Some(at("2026-12-08T06:00:00Z"))
        );
        // Noon in Paris: not quiet.
        assert_eq!(quiet_until(&quiet, at("2026-12-08T11:00:00Z")), None);
        // In summer Paris is UTC+2: the same clock time is an hour earlier in UTC.
        assert_eq!(
            quiet_until(&quiet, at("2026-07-01T21:30:00Z")),
            Some(at("2026-07-02T05:00:00Z"))
        );
    }

    #[test]
    fn a_window_within_a_day_and_the_off_cases() {
        let lunch = json!({"enabled": true, "start": "12:00", "end": "13:30", "time_zone": "UTC"});
        assert_eq!(
            quiet_until(&lunch, at("2026-12-07T12:15:00Z")),
            Some(at("2026-12-07T13:30:00Z"))
        );
        assert_eq!(quiet_until(&lunch, at("2026-12-07T13:30:00Z")), None);
        let off = json!({"enabled": false, "start": "00:00", "end": "23:59", "time_zone": "UTC"});
        assert_eq!(quiet_until(&off, at("2026-12-07T12:00:00Z")), None);
        let empty = json!({"enabled": true, "start": "08:00", "end": "08:00", "time_zone": "UTC"});
        assert_eq!(quiet_until(&empty, at("2026-12-07T08:00:00Z")), None);
        // An unknown zone counts as UTC.
        let nowhere =
            json!({"enabled": true, "start": "12:00", "end": "13:00", "time_zone": "Mars/Base"});
        assert_eq!(
            quiet_until(&nowhere, at("2026-12-07T12:30:00Z")),
            Some(at("2026-12-07T13:00:00Z"))
        );
    }
}
