//! The shapes of the settings documents: each key, its type, its bounds and its
//! default. A stored document holds only what was set; what a reader gets is the
//! defaults with that laid over them. A JSON merge patch (RFC 7396) changes the stored
//! document, and the result must fit the shape: an unknown key or a wrong type is
//! refused, naming the key by its path (`sessions.tool_rounds`).

use serde_json::{Map, Value, json};

/// What a key holds.
#[derive(Debug)]
pub enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    /// Printable text of at most `max` characters.
    Text {
        max: usize,
    },
    /// One of these words.
    Word(&'static [&'static str]),
    /// Several of these words, each once.
    Words(&'static [&'static str]),
    /// An email address (`name@example.com`), at most 254 characters.
    Email,
    /// `HH:MM`, 24-hour.
    ClockTime,
    /// An IANA time zone name (`Europe/Paris`) or `UTC`.
    TimeZone,
    Object(&'static [Field]),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// The value when none is set (for an object: ignored, its fields' defaults apply;
    /// `null`: the service's own configured default applies).
    pub default: fn() -> Value,
}

/// A tenant's settings.
pub const TENANT: &[Field] = &[
    Field {
        name: "display_name",
        kind: Kind::Text { max: 100 },
        default: || json!(""),
    },
    Field {
        name: "default_model_profile",
        kind: Kind::Text { max: 64 },
        default: || json!(""),
    },
    Field {
        name: "data_residency",
        kind: Kind::Text { max: 32 },
        default: || json!(""),
    },
    Field {
        name: "sessions",
        kind: Kind::Object(&[
            Field {
                name: "memory_recall",
                kind: Kind::Bool,
                default: || json!(true),
            },
            // `null` until set: the platform's configured default applies
            // (`orchestrator.max_tool_rounds`, `orchestrator.approval_timeout_secs`).
            Field {
                name: "tool_rounds",
                kind: Kind::Int { min: 0, max: 32 },
                default: || Value::Null,
            },
            Field {
                name: "approval_timeout_secs",
                kind: Kind::Int {
                    min: 10,
                    max: 86_400,
                },
                default: || Value::Null,
            },
        ]),
        default: || json!({}),
    },
];

/// A user's preferences.
pub const PREFERENCES: &[Field] = &[Field {
    name: "notifications",
    kind: Kind::Object(&[
        // Where the `email` channel sends; `null` until set (no email then).
        Field {
            name: "email",
            kind: Kind::Email,
            default: || Value::Null,
        },
        // Where the `slack` channel posts (a channel or user id, `C0123…`/`U0123…`,
        // through the tenant's Slack tool); `null` until set.
        Field {
            name: "slack_channel",
            kind: Kind::Text { max: 80 },
            default: || Value::Null,
        },
        Field {
            name: "channels",
            kind: Kind::Words(&["in_app", "email", "webhook", "slack"]),
            default: || json!(["in_app"]),
        },
        Field {
            name: "min_severity",
            kind: Kind::Word(&["info", "warning", "critical"]),
            default: || json!("info"),
        },
        Field {
            name: "quiet_hours",
            kind: Kind::Object(&[
                Field {
                    name: "enabled",
                    kind: Kind::Bool,
                    default: || json!(false),
                },
                Field {
                    name: "start",
                    kind: Kind::ClockTime,
                    default: || json!("22:00"),
                },
                Field {
                    name: "end",
                    kind: Kind::ClockTime,
                    default: || json!("07:00"),
                },
                Field {
                    name: "time_zone",
                    kind: Kind::TimeZone,
                    default: || json!("UTC"),
                },
            ]),
            default: || json!({}),
        },
    ]),
    default: || json!({}),
}];

/// A key that does not fit: its path and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfit {
    pub path: String,
    pub message: String,
}

/// RFC 7396: `patch` laid over `target`; `null` removes a key, an object merges, any
/// other value replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(changes) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for (key, change) in changes {
        if change.is_null() {
            out.remove(key);
        } else {
            let merged = merge_patch(out.get(key).unwrap_or(&Value::Null), change);
            out.insert(key.clone(), merged);
        }
    }
    Value::Object(out)
}

/// Checks a stored document against its shape.
pub fn check(fields: &[Field], document: &Value) -> Result<(), Misfit> {
    let Value::Object(map) = document else {
        return Err(Misfit {
            path: String::new(),
            message: "is a JSON object".into(),
        });
    };
    check_object(fields, map, "")
}

fn check_object(fields: &[Field], map: &Map<String, Value>, prefix: &str) -> Result<(), Misfit> {
    for (key, value) in map {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let Some(field) = fields.iter().find(|f| f.name == key) else {
            let known: Vec<&str> = fields.iter().map(|f| f.name).collect();
            return Err(Misfit {
                path,
                message: format!("is not a setting here (known: {})", known.join(", ")),
            });
        };
        check_value(&field.kind, value, &path)?;
    }
    Ok(())
}

fn check_value(kind: &Kind, value: &Value, path: &str) -> Result<(), Misfit> {
    let misfit = |message: String| Misfit {
        path: path.to_owned(),
        message,
    };
    match kind {
        Kind::Bool if value.is_boolean() => Ok(()),
        Kind::Bool => Err(misfit("is true or false".into())),
        Kind::Int { min, max } => match value.as_i64() {
            Some(n) if (*min..=*max).contains(&n) => Ok(()),
            _ => Err(misfit(format!("is a whole number from {min} to {max}"))),
        },
        Kind::Text { max } => match value.as_str() {
            Some(s) if s.chars().count() <= *max && !s.chars().any(char::is_control) => Ok(()),
            _ => Err(misfit(format!(
                "is text of at most {max} printable characters"
            ))),
        },
        Kind::Word(words) => match value.as_str() {
            Some(s) if words.contains(&s) => Ok(()),
            _ => Err(misfit(format!("is one of {}", words.join(", ")))),
        },
        Kind::Words(words) => {
            let list = value
                .as_array()
                .ok_or_else(|| misfit(format!("is a list of {}", words.join(", "))))?;
            let mut seen = Vec::new();
            for item in list {
                match item.as_str() {
                    Some(s) if words.contains(&s) && !seen.contains(&s) => seen.push(s),
                    _ => {
                        return Err(misfit(format!(
                            "is a list of {}, each once",
                            words.join(", ")
                        )));
                    }
                }
            }
            Ok(())
        }
        Kind::Email => match value.as_str() {
            Some(address) if is_email(address) => Ok(()),
            _ => Err(misfit(
                "is an email address such as name@example.com".into(),
            )),
        },
        Kind::ClockTime => match value.as_str().and_then(clock_time) {
            Some(_) => Ok(()),
            None => Err(misfit("is a time of day as HH:MM (24-hour)".into())),
        },
        Kind::TimeZone => match value.as_str() {
            Some(zone) if is_zone_name(zone) => Ok(()),
            _ => Err(misfit(
                "is an IANA time zone such as Europe/Paris, or UTC".into(),
            )),
        },
        Kind::Object(fields) => match value {
            Value::Object(map) => check_object(fields, map, path),
            _ => Err(misfit("is a JSON object".into())),
        },
    }
}

/// Minutes after midnight of `HH:MM`.
pub fn clock_time(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `local@domain.tld` with nothing a mail header could be split or spoofed by.
fn is_email(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    address.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.contains("..")
        && address
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>(),;:\\\"[]".contains(c))
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
}

/// The shape of an IANA zone name: `UTC`, or `Area/Location` (`America/Argentina/Salta`).
fn is_zone_name(zone: &str) -> bool {
    if zone == "UTC" {
        return true;
    }
    let parts: Vec<&str> = zone.split('/').collect();
    (2..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 32
                && p.starts_with(|c: char| c.is_ascii_uppercase())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
        })
}

/// The defaults with `document` laid over them: what a reader sees.
pub fn resolve(fields: &[Field], document: &Value) -> Value {
    let mut out = Map::new();
    for field in fields {
        let set = document.get(field.name);
        let value = match (&field.kind, set) {
            (Kind::Object(inner), set) => resolve(inner, set.unwrap_or(&Value::Null)),
            (_, Some(value)) => value.clone(),
            (_, None) => (field.default)(),
        };
        out.insert(field.name.to_owned(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_sets_merges_and_removes() {
        let stored = json!({"display_name": "Acme", "sessions": {"tool_rounds": 3}});
        let patched = merge_patch(
            &stored,
            &json!({"display_name": null, "sessions": {"memory_recall": false}}),
        );
        assert_eq!(
            patched,
            json!({"sessions": {"tool_rounds": 3, "memory_recall": false}})
        );
        let resolved = resolve(TENANT, &patched);
        assert_eq!(resolved["display_name"], "");
        assert_eq!(resolved["sessions"]["tool_rounds"], 3);
        assert_eq!(resolved["sessions"]["approval_timeout_secs"], Value::Null);
    }

    #[test]
    fn a_misfit_is_named_by_its_path() {
        let wrong = |doc: Value| check(TENANT, &doc).unwrap_err().path;
        assert_eq!(wrong(json!({"colour": "red"})), "colour");
        assert_eq!(
            wrong(json!({"sessions": {"tool_rounds": "8"}})),
            "sessions.tool_rounds"
        );
        assert_eq!(
            wrong(json!({"sessions": {"tool_rounds": 99}})),
            "sessions.tool_rounds"
        );
        assert_eq!(wrong(json!({"sessions": {"loops": 1}})), "sessions.loops");
        assert_eq!(wrong(json!({"sessions": true})), "sessions");
        assert!(check(TENANT, &json!({"sessions": {"tool_rounds": 0}})).is_ok());

        let pref = |doc: Value| check(PREFERENCES, &doc).map_err(|m| m.path);
        assert!(pref(json!({"notifications": {"channels": ["email", "in_app"],
            "quiet_hours": {"enabled": true, "start": "21:30", "time_zone": "America/Argentina/Salta"}}})).is_ok());
        assert!(
            pref(json!({"notifications": {"email": "ana.lopez+ops@mail.example.com"}})).is_ok()
        );
        for bad in [
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "ana@example.com\r\nBcc: x@y.z",
            "\"ana\"@example.com",
            "ana@exa_mple.com",
        ] {
            assert_eq!(
                pref(json!({"notifications": {"email": bad}})),
                Err("notifications.email".to_owned()),
                "{bad}"
            );
        }
        assert_eq!(
            pref(json!({"notifications": {"channels": ["email", "email"]}})),
            Err("notifications.channels".into())
        );
        assert_eq!(
            pref(json!({"notifications": {"quiet_hours": {"start": "25:00"}}})),
            Err("notifications.quiet_hours.start".into())
        );
        assert_eq!(
            pref(json!({"notifications": {"quiet_hours": {"time_zone": "Mars/Olympus Mons"}}})),
            Err("notifications.quiet_hours.time_zone".into())
        );
    }
}
