//! Compiles a tenant's constitution and rules into one Rego module (Rego v1): the
//! tenant's terms, patterns, detectors and tool rules as constants, and the platform's
//! decision logic over them. The same module runs in process (regorus) and on OPA.

use serde_json::{Value, json};
use somagent_common::constitution::{Constitution, PII_PATTERNS, Severity};

use crate::domain::rules::{Rule, RuleKind};

/// A compiled module: its package and text, named by what it was compiled from, and
/// its patterns compiled once for the host to match (regular expressions are the
/// costly part of an evaluation; matched natively, both engines get the same hits).
#[derive(Debug, Clone)]
pub struct Compiled {
    /// `somagent.t_<digest>`.
    pub package: String,
    pub module: String,
    /// The constitution's hash, reported with every decision.
    pub constitution_hash: String,
    /// What an answer may not say, for checking it as it streams.
    pub output_guard: crate::domain::output_guard::OutputGuard,
    pattern_ids: Vec<String>,
    /// `Err` when the tenant's patterns do not compile together: then no decision can
    /// be made, and every one is denied (fail closed), never made without them.
    patterns: Result<regex::RegexSet, String>,
}

impl Compiled {
    /// The engines' input: the question, plus the ids of the patterns the text matches;
    /// an error if the patterns could not be compiled.
    pub fn input(
        &self,
        action: &str,
        text: &str,
        tool: &str,
        roles: &[&str],
    ) -> anyhow::Result<Value> {
        let patterns = self
            .patterns
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the tenant's policy patterns do not compile: {e}"))?;
        let hits: Vec<&str> = if matches!(action, "prompt" | "completion") {
            patterns
                .matches(text)
                .into_iter()
                .map(|i| self.pattern_ids[i].as_str())
                .collect()
        } else {
            Vec::new()
        };
        Ok(
            json!({ "action": action, "text": text, "tool": tool, "roles": roles, "pattern_hits": hits }),
        )
    }

    /// The rule the engines evaluate.
    pub fn decision_rule(&self) -> String {
        format!("data.{}.decision", self.package)
    }

    /// The OPA data path of the decision (`somagent/t_x/decision`).
    pub fn data_path(&self) -> String {
        format!("{}/decision", self.package.replace('.', "/"))
    }
}

fn matcher(id: &str, value: &str, severity: Severity, score: u32, reason: &str) -> Value {
    json!({ "id": id, "value": value, "severity": severity.as_str(), "score": score, "reason": reason })
}

pub fn compile(
    tenant: &str,
    constitution: &Constitution,
    constitution_hash: &str,
    rules: &[Rule],
) -> Compiled {
    let mut terms = Vec::new();
    let mut patterns = Vec::new();
    let mut deny_tools: Vec<String> = constitution.tools.deny.clone();
    for m in &constitution.forbidden_terms {
        terms.push(matcher(
            &m.id,
            &m.value.to_lowercase(),
            m.severity,
            m.score,
            &m.reason,
        ));
    }
    for m in &constitution.forbidden_patterns {
        patterns.push(matcher(&m.id, &m.value, m.severity, m.score, &m.reason));
    }
    for (name, severity) in &constitution.pii {
        if let Some((_, pattern)) = PII_PATTERNS.iter().find(|(n, _)| n == name) {
            let score = match severity {
                Severity::Low => 20,
                Severity::Medium => 40,
                Severity::High => 70,
                Severity::Critical => 100,
            };
            patterns.push(matcher(
                &format!("pii.{name}"),
                pattern,
                *severity,
                score,
                &format!("contains personal data ({})", name.replace('_', " ")),
            ));
        }
    }
    for rule in rules.iter().filter(|r| r.enabled) {
        let reason = if rule.description.is_empty() {
            &rule.name
        } else {
            &rule.description
        };
        match rule.kind {
            RuleKind::ForbiddenTerm => terms.push(matcher(
                &rule.id,
                &rule.value.to_lowercase(),
                rule.severity,
                rule.score,
                reason,
            )),
            RuleKind::ForbiddenPattern => patterns.push(matcher(
                &rule.id,
                &rule.value,
                rule.severity,
                rule.score,
                reason,
            )),
            RuleKind::DenyTool => deny_tools.push(rule.value.clone()),
        }
    }
    let role_deny: serde_json::Map<String, Value> = constitution
        .roles
        .iter()
        .map(|(role, r)| (role.clone(), json!(r.deny_tools)))
        .collect();
    let constants = json!({
        "terms": terms,
        "patterns": patterns,
        "tools_allow": constitution.tools.allow,
        "tools_deny": deny_tools,
        "role_deny_tools": role_deny,
        "block_score": constitution.thresholds.block_score,
        "max_chars": constitution.thresholds.max_prompt_chars,
    });
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{tenant}\n{constants}").as_bytes(),
    );
    let package = format!(
        "somagent.t_{}",
        &data_encoding::HEXLOWER.encode(digest.as_ref())[..24]
    );
    let mut module = format!("package {package}\n\nimport rego.v1\n\n");
    for (name, value) in constants.as_object().into_iter().flatten() {
        module.push_str(&format!("{name} := {value}\n\n"));
    }
    module.push_str(LOGIC);
    let pattern_ids: Vec<String> = patterns
        .iter()
        .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Patterns were checked when published; if they still fail to compile together (a
    // size limit, an engine change), decisions are denied until they are fixed: matching
    // nothing would let PII and every tenant pattern through unnoticed.
    let sources: Vec<&str> = patterns
        .iter()
        .map(|p| p["value"].as_str().unwrap_or_default())
        .collect();
    let patterns = regex::RegexSet::new(&sources).map_err(|e| {
        tracing::error!(error = %e, tenant, "the policy patterns do not compile; every decision is denied");
        e.to_string()
    });
    Compiled {
        output_guard: crate::domain::output_guard::OutputGuard::from_constants(&constants),
        package,
        module,
        constitution_hash: constitution_hash.to_owned(),
        pattern_ids,
        patterns,
    }
}

/// The platform's decision logic over the constants above. Scores are integers so both
/// engines agree exactly.
const LOGIC: &str = r#"text := lower(input.text)

findings contains f if {
	input.action in {"prompt", "completion"}
	some t in terms
	contains(text, t.value)
	f := {"id": t.id, "reason": t.reason, "severity": t.severity, "score": t.score, "flagged": t.value}
}

findings contains f if {
	input.action in {"prompt", "completion"}
	some p in patterns
	p.id in input.pattern_hits
	f := {"id": p.id, "reason": p.reason, "severity": p.severity, "score": p.score, "flagged": p.id}
}

findings contains f if {
	input.action == "prompt"
	count(input.text) > max_chars
	f := {"id": "limits.prompt_length", "reason": sprintf("the prompt is longer than %d characters", [max_chars]), "severity": "medium", "score": 100, "flagged": ""}
}

findings contains f if {
	input.action == "tool"
	input.tool in tools_deny
	f := {"id": "tools.denied", "reason": sprintf("the tool %s is not allowed", [input.tool]), "severity": "high", "score": 100, "flagged": input.tool}
}

findings contains f if {
	input.action == "tool"
	count(tools_allow) > 0
	not input.tool in tools_allow
	f := {"id": "tools.not_allowed", "reason": sprintf("the tool %s is not on the allow list", [input.tool]), "severity": "high", "score": 100, "flagged": input.tool}
}

findings contains f if {
	input.action == "tool"
	some role in input.roles
	some denied in object.get(role_deny_tools, role, [])
	denied in {"*", input.tool}
	f := {"id": sprintf("roles.%s.deny_tools", [role]), "reason": sprintf("the role %s may not call %s", [role, input.tool]), "severity": "high", "score": 100, "flagged": input.tool}
}

default score := 0

scores := {f.score | f := findings[_]}

score := max(scores) if count(findings) > 0

decision := {"allowed": score < block_score, "score": score, "findings": findings}
"#;
