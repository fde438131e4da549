//! A tenant's own rules, besides its constitution's: forbidden terms and patterns and
//! denied tools, each with a severity and a score.

use somagent_common::constitution::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    ForbiddenTerm,
    ForbiddenPattern,
    DenyTool,
}

impl RuleKind {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "forbidden_term" => Some(Self::ForbiddenTerm),
            "forbidden_pattern" => Some(Self::ForbiddenPattern),
            "deny_tool" => Some(Self::DenyTool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForbiddenTerm => "forbidden_term",
            Self::ForbiddenPattern => "forbidden_pattern",
            Self::DenyTool => "deny_tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: RuleKind,
    pub value: String,
    pub severity: Severity,
    pub score: u32,
    pub enabled: bool,
    pub updated_at: i64,
}

impl Rule {
    /// What is wrong with it, naming the field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(("name", "is 1-200 characters".into()));
        }
        if self.description.len() > 2000 {
            return Err(("description", "is at most 2000 characters".into()));
        }
        if self.value.trim().is_empty() || self.value.len() > 1000 {
            return Err(("value", "is 1-1000 characters".into()));
        }
        if self.score > 100 {
            return Err(("score", "is 0-100".into()));
        }
        if self.kind == RuleKind::ForbiddenPattern {
            regex::Regex::new(&self.value)
                .map_err(|e| ("value", format!("is not a regular expression: {e}")))?;
        }
        Ok(())
    }
}
