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

/// The channels that reach a person outside the platform, and the preference that
/// says where: `email` (`notifications.email`), `slack` (`notifications.slack_channel`).
pub const PERSONAL_CHANNELS: &[(&str, &str)] = &[("email", "email"), ("slack", "slack_channel")];

/// Where to send a notice of `severity` on `channel`, if the user asked for it there
/// (the channel kept, an address set) at that severity.
pub fn address_on(preferences: &Value, channel: &str, severity: Severity) -> Option<String> {
    let field = PERSONAL_CHANNELS
        .iter()
        .find(|(c, _)| *c == channel)
        .map(|(_, f)| *f)?;
    let notifications = &preferences["notifications"];
    let wanted = notifications["channels"]
        .as_array()
        .is_some_and(|channels| channels.iter().any(|c| c == channel));
    let least = notifications["min_severity"]
        .as_str()
        .and_then(Severity::parse)
        .unwrap_or(Severity::Info);
    notifications[field]
        .as_str()
        .filter(|a| wanted && severity >= least && !a.trim().is_empty())
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
    fn email_and_slack_go_where_and_when_the_user_asked() {
        let prefs = json!({"notifications": {"channels": ["in_app", "email"], "min_severity": "warning", "email": "ana@example.com"}});
        let email = |p: &Value, s| address_on(p, "email", s);
        assert_eq!(
            email(&prefs, Severity::Critical).as_deref(),
            Some("ana@example.com")
        );
        assert_eq!(email(&prefs, Severity::Info), None);
        let no_channel =
            json!({"notifications": {"channels": ["in_app"], "email": "ana@example.com"}});
        assert_eq!(email(&no_channel, Severity::Critical), None);
        let no_address = json!({"notifications": {"channels": ["email"], "email": null}});
        assert_eq!(email(&no_address, Severity::Critical), None);
        let slack = json!({"notifications": {"channels": ["slack"], "slack_channel": "C0123", "email": "ana@example.com"}});
        assert_eq!(
            address_on(&slack, "slack", Severity::Info).as_deref(),
            Some("C0123")
        );
        assert_eq!(address_on(&slack, "email", Severity::Info), None);
        assert_eq!(address_on(&slack, "pager", Severity::Info), None);
    }
}
