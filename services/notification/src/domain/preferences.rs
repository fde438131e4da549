//! A user's notification preferences (kept by the settings service, defaults filled
//! in): `notifications.channels` (`in_app`, `email`, `webhook`, `slack`),
//! `notifications.min_severity`, `notifications.quiet_hours`.

use serde_json::Value;

use super::notice::Severity;

/// True if a notice of `severity` goes to the user's inbox: they keep the in-app
/// channel and it is at least as urgent as they asked for. Preferences that do not
/// read (an older document) leave the inbox on, at every severity.
pub fn inbox_allows(preferences: &Value, severity: Severity) -> bool {
    let notifications = &preferences["notifications"];
    let in_app = notifications["channels"]
        .as_array()
        .is_none_or(|channels| channels.iter().any(|c| c == "in_app"));
    let least = notifications["min_severity"]
        .as_str()
        .and_then(Severity::parse)
        .unwrap_or(Severity::Info);
    in_app && severity >= least
}

/// The address to email a notice of `severity` to, if the user asked for email (the
/// `email` channel and an address) at that severity.
pub fn email_to(preferences: &Value, severity: Severity) -> Option<String> {
    let notifications = &preferences["notifications"];
    let wanted = notifications["channels"]
        .as_array()
        .is_some_and(|channels| channels.iter().any(|c| c == "email"));
    let least = notifications["min_severity"]
        .as_str()
        .and_then(Severity::parse)
        .unwrap_or(Severity::Info);
    notifications["email"]
        .as_str()
        .filter(|a| wanted && severity >= least && !a.is_empty())
        .map(str::to_owned)
}

/// The user's quiet hours (`{enabled, start, end, time_zone}`).
pub fn quiet_hours(preferences: &Value) -> &Value {
    &preferences["notifications"]["quiet_hours"]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_inbox_keeps_what_the_user_asked_for() {
        let defaults = json!({"notifications": {"channels": ["in_app"], "min_severity": "info"}});
        assert!(inbox_allows(&defaults, Severity::Info));
        let warnings =
            json!({"notifications": {"channels": ["in_app", "email"], "min_severity": "warning"}});
        assert!(!inbox_allows(&warnings, Severity::Info));
        assert!(inbox_allows(&warnings, Severity::Warning));
        assert!(inbox_allows(&warnings, Severity::Critical));
        let email_only = json!({"notifications": {"channels": ["email"], "min_severity": "info"}});
        assert!(!inbox_allows(&email_only, Severity::Critical));
        assert!(inbox_allows(&json!({}), Severity::Info));
    }

    #[test]
    fn email_goes_where_and_when_the_user_asked() {
        let prefs = json!({"notifications": {"channels": ["in_app", "email"], "min_severity": "warning", "email": "ana@example.com"}});
        assert_eq!(
            email_to(&prefs, Severity::Critical).as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(email_to(&prefs, Severity::Info), None);
        let no_channel =
            json!({"notifications": {"channels": ["in_app"], "email": "ana@example.com"}});
        assert_eq!(email_to(&no_channel, Severity::Critical), None);
        let no_address = json!({"notifications": {"channels": ["email"], "email": null}});
        assert_eq!(email_to(&no_address, Severity::Critical), None);
    }
}
