//! Budgets: what a tenant lets itself spend, per whom and per period, and how a call's
//! largest cost is weighed against each. No I/O: the counters live in `reservations`.

use std::fmt;

use time::{Date, Month, OffsetDateTime, Time};

/// Whose calls a budget counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Tenant,
    User(String),
    Project(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Tokens,
    /// Micro-units of the budget's currency.
    Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// The UTC calendar day.
    Day,
    /// The UTC calendar month.
    Month,
    Total,
}

/// The most a scope id or name may be (they end up in keys and in refusals).
const MAX_NAME: usize = 128;
/// The most budgets a tenant may have: every reservation weighs each that applies.
pub const MAX_BUDGETS: usize = 100;
pub const DEFAULT_SOFT_PERCENT: u32 = 80;
pub const DEFAULT_CURRENCY: &str = "USD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub name: String,
    pub scope: Scope,
    pub metric: Metric,
    pub period: Period,
    pub limit: i64,
    pub soft_percent: u32,
    pub currency: String,
}

/// A budget as a caller wrote it, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct BudgetInput {
    pub name: String,
    pub scope: String,
    pub scope_id: String,
    pub metric: String,
    pub period: String,
    pub limit: i64,
    pub soft_percent: u32,
    pub currency: String,
}

/// A field of one budget that is wrong: `budgets[i].field` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

/// What a call may use at most, or did use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    pub tokens: i64,
    pub micros: i64,
    pub currency: String,
}

/// Who a call was for, beyond its tenant.
#[derive(Debug, Clone, Default)]
pub struct CallScope {
    pub user: String,
    pub project: String,
}

/// The period a budget counts in at a moment: its label (part of the counter's key)
/// and when it ends (`None` for `total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub label: String,
    pub ends_at_ms: Option<i64>,
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::User(_) => "user",
            Self::Project(_) => "project",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Self::Tenant => "",
            Self::User(id) | Self::Project(id) => id,
        }
    }
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Money => "money",
        }
    }
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// The period containing `at_ms` (Unix ms, UTC).
    pub fn window(self, at_ms: i64) -> Window {
        let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let date = at.date();
        let midnight = |d: Date| d.with_time(Time::MIDNIGHT).assume_utc();
        let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        match self {
            Self::Day => Window {
                label: format!(
                    "{:04}-{:02}-{:02}",
                    date.year(),
                    u8::from(date.month()),
                    date.day()
                ),
                ends_at_ms: date.next_day().map(|d| ms(midnight(d))),
            },
            Self::Month => {
                let (year, month) = match date.month() {
                    Month::December => (date.year() + 1, Month::January),
                    m => (date.year(), m.next()),
                };
                Window {
                    label: format!("{:04}-{:02}", date.year(), u8::from(date.month())),
                    ends_at_ms: Date::from_calendar_date(year, month, 1)
                        .ok()
                        .map(|d| ms(midnight(d))),
                }
            }
            Self::Total => Window {
                label: "total".into(),
                ends_at_ms: None,
            },
        }
    }
}

impl Budget {
    /// What the budget counts, independent of its name and limit: a budget renamed or
    /// given a new limit keeps what it spent.
    pub fn key(&self) -> String {
        format!(
            "{}:{}|{}{}|{}",
            self.scope.kind(),
            self.scope.id(),
            self.metric.as_str(),
            if self.metric == Metric::Money {
                format!(":{}", self.currency)
            } else {
                String::new()
            },
            self.period.as_str()
        )
    }

    pub fn applies_to(&self, call: &CallScope) -> bool {
        match &self.scope {
            Scope::Tenant => true,
            Scope::User(id) => *id == call.user,
            Scope::Project(id) => !call.project.is_empty() && *id == call.project,
        }
    }

    /// What `cost` weighs in this budget's unit; `None` when it does not count here
    /// (money in another currency).
    pub fn amount(&self, cost: &Cost) -> Option<i64> {
        match self.metric {
            Metric::Tokens => Some(cost.tokens.max(0)),
            Metric::Money if cost.currency == self.currency => Some(cost.micros.max(0)),
            Metric::Money => None,
        }
    }

    /// The spend at which the tenant is warned.
    pub fn soft_limit(&self) -> i64 {
        ((i128::from(self.limit) * i128::from(self.soft_percent)) / 100) as i64
    }

    /// The thresholds a settlement moving spend from `before` to `after` crossed.
    pub fn crossed(&self, before: i64, after: i64) -> Vec<Threshold> {
        let mut crossed = Vec::new();
        let soft = self.soft_limit();
        if self.soft_percent < 100 && before < soft && after >= soft {
            crossed.push(Threshold::Soft);
        }
        if before < self.limit && after >= self.limit {
            crossed.push(Threshold::Exhausted);
        }
        crossed
    }
}

/// A line a budget's spend crosses once per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Soft,
    Exhausted,
}

impl Threshold {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Exhausted => "exhausted",
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// Checks a tenant's whole set of budgets: each field, names unique, and no two
/// budgets counting the same thing.
pub fn parse_budgets(inputs: Vec<BudgetInput>) -> Result<Vec<Budget>, Invalid> {
    if inputs.len() > MAX_BUDGETS {
        return Err(Invalid {
            field: "budgets".into(),
            message: format!("at most {MAX_BUDGETS} budgets"),
        });
    }
    let mut budgets: Vec<Budget> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let invalid = |field: &str, message: String| Invalid {
            field: format!("budgets[{i}].{field}"),
            message,
        };
        let budget = parse_budget(input).map_err(|(f, m)| invalid(f, m))?;
        if budgets.iter().any(|b| b.name == budget.name) {
            return Err(invalid("name", format!("`{}` is used twice", budget.name)));
        }
        if let Some(same) = budgets.iter().find(|b| b.key() == budget.key()) {
            return Err(invalid(
                "scope",
                format!(
                    "counts the same as `{}`; change that one's limit",
                    same.name
                ),
            ));
        }
        budgets.push(budget);
    }
    Ok(budgets)
}

fn parse_budget(b: BudgetInput) -> Result<Budget, (&'static str, String)> {
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(("name", format!("1 to {MAX_NAME} printable characters")));
    }
    let id = b.scope_id.trim().to_owned();
    let scope = match b.scope.as_str() {
        "tenant" if id.is_empty() => Scope::Tenant,
        "tenant" => return Err(("scope_id", "is empty for a tenant budget".into())),
        "user" | "project" if id.is_empty() || id.len() > MAX_NAME || id.contains('|') => {
            return Err((
                "scope_id",
                format!("names the {} (1 to {MAX_NAME} characters, no `|`)", b.scope),
            ));
        }
        "user" => Scope::User(id),
        "project" => Scope::Project(id),
        other => {
            return Err((
                "scope",
                format!("`{other}` is not one of tenant, user, project"),
            ));
        }
    };
    let metric = match b.metric.as_str() {
        "tokens" => Metric::Tokens,
        "money" => Metric::Money,
        other => return Err(("metric", format!("`{other}` is not one of tokens, money"))),
    };
    let period = match b.period.as_str() {
        "day" => Period::Day,
        "month" => Period::Month,
        "total" => Period::Total,
        other => {
            return Err((
                "period",
                format!("`{other}` is not one of day, month, total"),
            ));
        }
    };
    if b.limit < 0 {
        return Err(("limit", "is 0 or more".into()));
    }
    let soft_percent = match b.soft_percent {
        0 => DEFAULT_SOFT_PERCENT,
        p @ 1..=100 => p,
        _ => return Err(("soft_percent", "is 1 to 100".into())),
    };
    let currency = match b.currency.trim() {
        "" => DEFAULT_CURRENCY.to_owned(),
        c if c.len() == 3 && c.chars().all(|c| c.is_ascii_uppercase()) => c.to_owned(),
        _ => return Err(("currency", "is an ISO 4217 code such as USD".into())),
    };
    Ok(Budget {
        name,
        scope,
        metric,
        period,
        limit: b.limit,
        soft_percent,
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, scope: &str, id: &str, metric: &str, period: &str) -> BudgetInput {
        BudgetInput {
            name: name.into(),
            scope: scope.into(),
            scope_id: id.into(),
            metric: metric.into(),
            period: period.into(),
            limit: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn periods_are_utc_calendar_days_and_months() {
        // 2026-12-31T23:30:00Z
        let at = 1_798_759_800_000;
        let day = Period::Day.window(at);
        assert_eq!(day.label, "2026-12-31");
        assert_eq!(day.ends_at_ms, Some(1_798_761_600_000));
        let month = Period::Month.window(at);
        assert_eq!(month.label, "2026-12");
        assert_eq!(month.ends_at_ms, Some(1_798_761_600_000));
        assert_eq!(Period::Month.window(1_798_761_600_000).label, "2027-01");
        assert_eq!(Period::Total.window(at).ends_at_ms, None);
    }

    #[test]
    fn a_set_is_checked_field_by_field() {
        let ok = parse_budgets(vec![
            input("team", "tenant", "", "money", "month"),
            input("alice", "user", "alice", "tokens", "day"),
        ])
        .unwrap();
        assert_eq!(ok[0].soft_percent, 80);
        assert_eq!(ok[0].currency, "USD");
        assert_eq!(ok[1].scope, Scope::User("alice".into()));

        let err = parse_budgets(vec![input("x", "team", "", "money", "month")]).unwrap_err();
        assert_eq!(err.field, "budgets[0].scope");
        let err = parse_budgets(vec![input("x", "user", "", "money", "month")]).unwrap_err();
        assert_eq!(err.field, "budgets[0].scope_id");
        let err = parse_budgets(vec![
            input("a", "tenant", "", "money", "month"),
            input("a", "tenant", "", "money", "day"),
        ])
        .unwrap_err();
        assert_eq!(err.field, "budgets[1].name");
        let err = parse_budgets(vec![
            input("a", "tenant", "", "money", "month"),
            input("b", "tenant", "", "money", "month"),
        ])
        .unwrap_err();
        assert_eq!(err.field, "budgets[1].scope");
        let mut negative = input("a", "tenant", "", "tokens", "total");
        negative.limit = -1;
        assert_eq!(
            parse_budgets(vec![negative]).unwrap_err().field,
            "budgets[0].limit"
        );
    }

    #[test]
    fn a_budget_weighs_only_what_it_counts() {
        let money = parse_budgets(vec![input("m", "project", "p1", "money", "total")])
            .unwrap()
            .remove(0);
        let cost = Cost {
            tokens: 500,
            micros: 1234,
            currency: "USD".into(),
        };
        assert_eq!(money.amount(&cost), Some(1234));
        assert_eq!(
            money.amount(&Cost {
                currency: "EUR".into(),
                ..cost
            }),
            None
        );
        let call = |user: &str, project: &str| CallScope {
            user: user.into(),
            project: project.into(),
        };
        assert!(money.applies_to(&call("bob", "p1")));
        assert!(!money.applies_to(&call("bob", "")));
        assert!(!money.applies_to(&call("bob", "p2")));
    }

    #[test]
    fn each_threshold_is_crossed_once() {
        let b = parse_budgets(vec![input("t", "tenant", "", "tokens", "month")])
            .unwrap()
            .remove(0);
        assert_eq!(b.crossed(0, 799), vec![]);
        assert_eq!(b.crossed(799, 800), vec![Threshold::Soft]);
        assert_eq!(b.crossed(800, 900), vec![]);
        assert_eq!(
            b.crossed(100, 1000),
            vec![Threshold::Soft, Threshold::Exhausted]
        );
        assert_eq!(b.crossed(1000, 1100), vec![]);
    }
}
