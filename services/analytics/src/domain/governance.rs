//! A tenant's governance report for a period: what its policy denied and by which
//! rules, whose prompts were refused (moderation strikes), which tool calls people
//! approved or denied, which budget thresholds were crossed, and which constitution
//! versions were in force. As JSON, and as Markdown for people.

use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Count {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Approval {
    pub at: String,
    pub session_id: String,
    pub call_id: String,
    pub approved: bool,
    pub by: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BudgetEvent {
    pub at: String,
    pub budget: String,
    pub threshold: String,
    pub period: String,
    pub spent: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConstitutionVersion {
    /// When it was published; before the period for the one in force at its start.
    pub published_at: String,
    pub version: String,
    pub hash: String,
}

/// A KAMACHIQ project's end: what governed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProjectRun {
    pub at: String,
    pub project_id: String,
    pub status: String,
    /// Deliverables (and the goal) policy blocked.
    pub denied: i64,
    /// `approved`, `rejected`, `timed_out`, or empty when no approval was asked.
    pub approval: String,
    pub approved_by: String,
    pub tokens_limit: i64,
    pub tokens_spent: i64,
    pub deliverables: i64,
    pub delivered: i64,
    /// The mean review score of the deliverables that have one.
    pub mean_score: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GovernanceReport {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub decisions: i64,
    pub denials: i64,
    /// Denials by the action judged (`prompt`, `completion`, `tool_call`...).
    pub denials_by_action: Vec<Count>,
    /// Denials by the rule that decided, most first.
    pub denials_by_rule: Vec<Count>,
    /// Prompts refused, by user, most first.
    pub moderation_strikes: Vec<Count>,
    pub approvals: Vec<Approval>,
    pub budget_events: Vec<BudgetEvent>,
    pub constitutions: Vec<ConstitutionVersion>,
    pub projects: Vec<ProjectRun>,
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

impl GovernanceReport {
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Governance report\n");
        let _ = writeln!(
            md,
            "Tenant `{}`, from {} to {}.\n",
            cell(&self.tenant),
            self.from,
            self.to
        );
        let _ = writeln!(md, "## Policy\n");
        let _ = writeln!(
            md,
            "{} decisions, {} denied.\n",
            self.decisions, self.denials
        );
        let counts = |md: &mut String, title: &str, what: &str, rows: &[Count]| {
            let _ = writeln!(md, "### {title}\n");
            if rows.is_empty() {
                let _ = writeln!(md, "None.\n");
                return;
            }
            let _ = writeln!(md, "| {what} | Count |\n|---|---|");
            for r in rows {
                let _ = writeln!(md, "| {} | {} |", cell(&r.name), r.count);
            }
            md.push('\n');
        };
        counts(
            &mut md,
            "Denials by action",
            "Action",
            &self.denials_by_action,
        );
        counts(&mut md, "Denials by rule", "Rule", &self.denials_by_rule);
        counts(
            &mut md,
            "Moderation strikes",
            "User",
            &self.moderation_strikes,
        );
        let _ = writeln!(md, "## Approvals\n");
        if self.approvals.is_empty() {
            let _ = writeln!(md, "None.\n");
        } else {
            let _ = writeln!(
                md,
                "| When | Session | Call | Decision | By |\n|---|---|---|---|---|"
            );
            for a in &self.approvals {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    a.at,
                    cell(&a.session_id),
                    cell(&a.call_id),
                    if a.approved { "approved" } else { "denied" },
                    cell(&a.by)
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Budgets\n");
        if self.budget_events.is_empty() {
            let _ = writeln!(md, "No threshold crossed.\n");
        } else {
            let _ = writeln!(
                md,
                "| When | Budget | Threshold | Period | Spent | Limit |\n|---|---|---|---|---|---|"
            );
            for b in &self.budget_events {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    b.at,
                    cell(&b.budget),
                    cell(&b.threshold),
                    cell(&b.period),
                    b.spent,
                    b.limit
                );
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## Constitution\n");
        if self.constitutions.is_empty() {
            let _ = writeln!(
                md,
                "The platform's default constitution was in force throughout."
            );
        } else {
            let _ = writeln!(md, "| Version | Hash | Published |\n|---|---|---|");
            for c in &self.constitutions {
                let _ = writeln!(
                    md,
                    "| {} | `{}` | {} |",
                    cell(&c.version),
                    cell(&c.hash),
                    c.published_at
                );
            }
        }
        let _ = writeln!(md, "\n## Projects\n");
        if self.projects.is_empty() {
            let _ = writeln!(md, "No project ended.");
        } else {
            let _ = writeln!(
                md,
                "| Ended | Project | Status | Blocked by policy | Approval | Tokens (spent/limit) | Delivered | Mean score |\n|---|---|---|---|---|---|---|---|"
            );
            for p in &self.projects {
                let approval = match (p.approval.as_str(), p.approved_by.as_str()) {
                    ("", _) => "not asked".to_owned(),
                    (a, "") => a.to_owned(),
                    (a, by) => format!("{a} by {by}"),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {}/{} | {}/{} | {} |",
                    p.at,
                    cell(&p.project_id),
                    cell(&p.status),
                    p.denied,
                    cell(&approval),
                    p.tokens_spent,
                    p.tokens_limit,
                    p.delivered,
                    p.deliverables,
                    p.mean_score
                        .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}"))
                );
            }
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_every_section_and_escapes_cells() {
        let report = GovernanceReport {
            tenant: "acme".into(),
            from: "2026-12-01T00:00:00Z".into(),
            to: "2026-12-08T00:00:00Z".into(),
            decisions: 10,
            denials: 3,
            denials_by_rule: vec![Count {
                name: "no|pipes".into(),
                count: 2,
            }],
            moderation_strikes: vec![Count {
                name: "u1".into(),
                count: 2,
            }],
            ..GovernanceReport::default()
        };
        let md = report.to_markdown();
        for section in [
            "# Governance report",
            "## Policy",
            "### Denials by rule",
            "## Approvals",
            "## Budgets",
            "## Constitution",
        ] {
            assert!(md.contains(section), "{section}: {md}");
        }
        assert!(md.contains("| no\\|pipes | 2 |"), "{md}");
        assert!(md.contains("10 decisions, 3 denied."), "{md}");
    }
}
