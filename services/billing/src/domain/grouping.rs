//! How usage is grouped: the fields a caller may group by, each the SQL expression
//! over the ledger it stands for. Only these fixed expressions reach the SQL text.

/// A field usage can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// The UTC day of the call.
    Day,
    /// The model profile (chat and embedding calls; empty for tools).
    Model,
    /// The tool (empty for model calls).
    Tool,
    User,
    Session,
    Project,
    /// `model`, `embedding` or `tool`.
    Kind,
}

impl GroupBy {
    pub const ALL: [GroupBy; 7] = [
        Self::Day,
        Self::Model,
        Self::Tool,
        Self::User,
        Self::Session,
        Self::Project,
        Self::Kind,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Model => "model",
            Self::Tool => "tool",
            Self::User => "user",
            Self::Session => "session",
            Self::Project => "project",
            Self::Kind => "kind",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == name)
    }

    /// The ledger expression grouped on (text on both databases); days are counted
    /// from the Unix epoch, in UTC.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Day => "CAST(event_time_ms / 86400000 AS TEXT)",
            Self::Model => "CASE WHEN kind = 'tool' THEN '' ELSE item END",
            Self::Tool => "CASE WHEN kind = 'tool' THEN item ELSE '' END",
            Self::User => "user_id",
            Self::Session => "session_id",
            Self::Project => "project_id",
            Self::Kind => "kind",
        }
    }
}

/// The group fields asked for, in order, each once; or the first unknown or repeated
/// name.
pub fn parse_groups(names: &[String]) -> Result<Vec<GroupBy>, String> {
    let mut groups = Vec::new();
    for name in names {
        let group = GroupBy::parse(name).ok_or_else(|| {
            format!(
                "`{name}` is not one of {}",
                GroupBy::ALL.map(GroupBy::name).join(", ")
            )
        })?;
        if groups.contains(&group) {
            return Err(format!("`{name}` is named twice"));
        }
        groups.push(group);
    }
    Ok(groups)
}

/// The calendar date (`YYYY-MM-DD`, UTC) of day number `day` since the epoch.
pub fn day_label(day: i64) -> String {
    let date = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(day);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_known_fields_each_once() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_groups(&names(&["day", "model"])).unwrap(),
            [GroupBy::Day, GroupBy::Model]
        );
        assert!(
            parse_groups(&names(&["price"]))
                .unwrap_err()
                .contains("`price`")
        );
        assert!(parse_groups(&names(&["user", "user"])).is_err());
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_label(0), "1970-01-01");
        assert_eq!(day_label(20_428), "2025-12-06");
    }
}
