//! A tenant's constitution: the principles its agents follow and the rules the policy
//! engine enforces from it: forbidden terms and patterns, personal data, tools, what
//! each role may not do, and the score at which a request is refused. The constitution
//! service signs and versions it; the policy service compiles it to Rego.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }
}

/// One thing that must not be said (matched case-insensitively) or matched (a regular
/// expression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub id: String,
    /// The term, or the pattern.
    pub value: String,
    pub severity: Severity,
    /// 0-100; a request scoring `block_score` or more is refused.
    pub score: u32,
    /// Shown to the caller when it matches.
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRules {
    /// If not empty, only these tools may be called.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRules {
    /// Tools this role may not call (`*`: none).
    #[serde(default)]
    pub deny_tools: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Requests scoring this or more are refused (1-100).
    pub block_score: u32,
    /// Longer prompts are refused.
    pub max_prompt_chars: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constitution {
    pub name: String,
    pub principles: Vec<String>,
    #[serde(default)]
    pub forbidden_terms: Vec<Matcher>,
    #[serde(default)]
    pub forbidden_patterns: Vec<Matcher>,
    /// Personal data detectors (`email`, `credit_card`, `us_ssn`, `phone`) and how
    /// severe a match is.
    #[serde(default)]
    pub pii: BTreeMap<String, Severity>,
    #[serde(default)]
    pub tools: ToolRules,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleRules>,
    pub thresholds: Thresholds,
}

/// The personal data detectors a constitution may name, with their patterns.
pub const PII_PATTERNS: &[(&str, &str)] = &[
    ("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    ("credit_card", r"\b(?:\d[ -]?){13,16}\b"),
    ("us_ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
    (
        "phone",
        r"\+?\d{1,3}[ .-]?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b",
    ),
];

/// The constitution every tenant starts with.
pub const DEFAULT_JSON: &str = include_str!("constitution_default.json");

impl Constitution {
    pub fn default_document() -> Self {
        serde_json::from_str(DEFAULT_JSON).expect("the shipped constitution parses")
    }

    /// The canonical JSON (keys sorted), what is hashed and signed.
    pub fn canonical_json(&self) -> String {
        serde_json::to_value(self)
            .map(|v| v.to_string())
            .unwrap_or_default()
    }

    /// Checks the rules a pattern compiler cannot: ids, scores, thresholds, detectors.
    /// Patterns are checked by whoever compiles them.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("name is 1-200 characters".into());
        }
        if !(1..=100).contains(&self.thresholds.block_score) {
            return Err("thresholds.block_score is 1-100".into());
        }
        if self.thresholds.max_prompt_chars == 0 {
            return Err("thresholds.max_prompt_chars is at least 1".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for m in self.forbidden_terms.iter().chain(&self.forbidden_patterns) {
            let id_ok = !m.id.is_empty()
                && m.id.len() <= 64
                && m.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !id_ok {
                return Err(format!(
                    "rule id `{}` is 1-64 letters, digits, `.`, `_` or `-`",
                    m.id
                ));
            }
            if !ids.insert(m.id.as_str()) {
                return Err(format!("rule id `{}` is used twice", m.id));
            }
            if m.value.trim().is_empty() || m.value.len() > 1000 {
                return Err(format!("rule `{}`: the value is 1-1000 characters", m.id));
            }
            if m.score > 100 {
                return Err(format!("rule `{}`: score is 0-100", m.id));
            }
        }
        for name in self.pii.keys() {
            if !PII_PATTERNS.iter().any(|(known, _)| known == name) {
                return Err(format!(
                    "pii `{name}` is not a detector (email, credit_card, us_ssn, phone)"
                ));
            }
        }
        Ok(())
    }
}
