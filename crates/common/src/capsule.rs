//! A capsule: a versioned agent or task template (persona, model, tools, memory,
//! input and output schemas, limits, and for planners and reviewers their prompt
//! contracts), and what makes one trustworthy.
//!
//! Its attestation is the SHA-256 of its canonical JSON (object keys sorted, no
//! whitespace, strings as JSON writes them); its publisher signs
//! `somagent-capsule:v1\n<id>\n<version>\n<hash>` with an Ed25519 key. The capsule
//! repository recomputes both on submission, on install and on every run, so a row
//! edited behind its back is refused rather than run. Both services read a capsule
//! through this one type; no I/O here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a capsule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An agent a person talks to: a session with the capsule's persona.
    Agent,
    /// A task run once from its input: a session whose first message is the input.
    Task,
    /// Plans a project's deliverables (its `prompts.plan` is the contract).
    Planner,
    /// Scores a deliverable against its acceptance criteria (`prompts.review`).
    Reviewer,
    /// A KAMACHIQ project: its input renders the goal; `project` says which capsules
    /// plan, do and review the work, and within what.
    Project,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Task => "task",
            Kind::Planner => "planner",
            Kind::Reviewer => "reviewer",
            Kind::Project => "project",
        }
    }
}

/// What a run recalls from memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// Whether a turn recalls at all; the tenant's setting when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<bool>,
    /// The memory scopes it recalls from (`user`, `session`, `tenant`, `agent:<id>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// How far one run of the capsule may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Tokens (prompt and completion) one run may spend; past it the run stops
    /// offering tools and answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Model rounds with tool calls per turn, at most the tenant's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
    /// How long one run may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// What a project capsule runs: the capsules of its planner, reviewer and workers, and
/// the project's bounds. What it leaves out is the platform's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// `auto` or `manual` (a person approves the plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_deliverables: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_score: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_revisions: Option<u32>,
}

/// A capsule's definition, as its publisher wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// `[a-z0-9][a-z0-9_-]{1,63}`, the same across versions.
    pub id: String,
    /// Semantic version `MAJOR.MINOR.PATCH`.
    pub version: String,
    pub kind: Kind,
    pub name: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The system prompt every run starts with (a project capsule has none of its own).
    #[serde(default)]
    pub persona: String,
    /// The model profile it runs on; the session's (or the tenant's default) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tools it may use: tool ids (every action) or `<tool>__<action>` names. Empty:
    /// none.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub memory: MemorySpec,
    /// JSON Schema of the input `execute` takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// JSON Schema of the output it is asked for (planners and reviewers answer JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// How the input becomes the first message: `{{field}}` is the input's field, and
    /// `{{input}}` the whole input as JSON. `{{input}}` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Named prompt contracts: `plan` for a planner, `review` for a reviewer, `revise`
    /// for the agents whose work is reviewed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prompts: BTreeMap<String, String>,
    /// Numbers a planner or reviewer works within (`max_deliverables`,
    /// `pass_score`, `max_revisions`, `default_budget_tokens`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub heuristics: BTreeMap<String, u64>,
    /// A project capsule's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectSpec>,
}

/// The largest definition accepted, canonical.
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;
const MAX_PERSONA: usize = 32 * 1024;

impl Definition {
    /// Reads and checks a definition; the error names the field.
    pub fn parse(value: &Value) -> Result<Self, (String, String)> {
        let definition: Definition = serde_json::from_value(value.clone())
            .map_err(|e| ("definition".to_owned(), e.to_string()))?;
        definition.check()?;
        Ok(definition)
    }

    fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: &str| Err((f.to_owned(), m.to_owned()));
        if !valid_id(&self.id) {
            return field("id", "is [a-z0-9][a-z0-9_-]{1,63}");
        }
        if version_key(&self.version).is_none() {
            return field("version", "is a semantic version MAJOR.MINOR.PATCH");
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return field("name", "is 1-200 characters");
        }
        if self.summary.len() > 2000 {
            return field("summary", "is at most 2000 characters");
        }
        if self.category.len() > 64 {
            return field("category", "is at most 64 characters");
        }
        if self.tags.len() > 20 || self.tags.iter().any(|t| t.is_empty() || t.len() > 40) {
            return field("tags", "are at most 20, each 1-40 characters");
        }
        let needs_persona = self.kind != Kind::Project;
        if (needs_persona && self.persona.trim().is_empty()) || self.persona.len() > MAX_PERSONA {
            return field("persona", "is 1-32768 characters");
        }
        if self.project.is_some() != (self.kind == Kind::Project) {
            return field("project", "is given by a project capsule, and only by one");
        }
        if let Some(project) = &self.project {
            let ids = [&project.planner, &project.reviewer, &project.worker];
            if ids
                .iter()
                .any(|id| id.as_ref().is_some_and(|id| !valid_id(id)))
            {
                return field("project", "names capsules by their ids");
            }
            if project
                .approval
                .as_deref()
                .is_some_and(|a| a != "auto" && a != "manual")
            {
                return field("project.approval", "is `auto` or `manual`");
            }
        }
        if self
            .model
            .as_ref()
            .is_some_and(|m| m.is_empty() || m.len() > 200)
        {
            return field("model", "is 1-200 characters");
        }
        if self.tools.len() > 100
            || self.tools.iter().any(|t| {
                t.is_empty()
                    || t.len() > 128
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
        {
            return field(
                "tools",
                "are at most 100 tool ids or `<tool>__<action>` names",
            );
        }
        if self.memory.scopes.len() > 8 {
            return field("memory.scopes", "are at most 8");
        }
        for (name, schema) in [
            ("input_schema", &self.input_schema),
            ("output_schema", &self.output_schema),
        ] {
            if schema.as_ref().is_some_and(|s| !s.is_object()) {
                return field(name, "is a JSON Schema object");
            }
        }
        if self.limits.max_rounds.is_some_and(|r| r > 32) {
            return field("limits.max_rounds", "is at most 32");
        }
        if self.limits.max_tokens == Some(0) || self.limits.timeout_secs == Some(0) {
            return field("limits", "are positive");
        }
        let needs = match self.kind {
            Kind::Planner => Some("plan"),
            Kind::Reviewer => Some("review"),
            Kind::Agent | Kind::Task | Kind::Project => None,
        };
        if let Some(contract) = needs
            && self
                .prompts
                .get(contract)
                .is_none_or(|p| p.trim().is_empty())
        {
            return Err((
                format!("prompts.{contract}"),
                format!("a {} states its `{contract}` prompt", self.kind.as_str()),
            ));
        }
        if self.prompts.values().any(|p| p.len() > MAX_PERSONA) {
            return field("prompts", "are at most 32768 characters each");
        }
        Ok(())
    }

    /// The first message a run starts with, from its input.
    pub fn render(&self, input: &Value) -> String {
        render(
            self.prompt_template.as_deref().unwrap_or("{{input}}"),
            input,
        )
    }

    /// Whether the capsule may use the tool function `name` (`<tool>__<action>`).
    pub fn allows_tool(&self, function: &str) -> bool {
        let tool = crate::tool_functions::split_function_name(function).map(|(t, _)| t);
        self.tools
            .iter()
            .any(|t| t == function || Some(t.as_str()) == tool)
    }
}

/// `template` with each `{{field}}` replaced by that field of `input` (a string as it
/// is, anything else as JSON, an array of strings as a bulleted list) and `{{input}}`
/// by the whole input as JSON; a field the input lacks renders empty.
pub fn render(template: &str, input: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = after[..end].trim();
        let value = if name == "input" {
            Some(input)
        } else {
            input.get(name)
        };
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) && name != "input" => {
                let lines: Vec<String> = items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| format!("- {s}"))
                    .collect();
                out.push_str(&lines.join("\n"));
            }
            Some(other) => out.push_str(&other.to_string()),
            None => {}
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// `[a-z0-9][a-z0-9_-]{1,63}`.
pub fn valid_id(id: &str) -> bool {
    valid_name(id, 2)
}

/// A name of `min` to 64 characters: `[a-z0-9]` then `[a-z0-9_-]`.
pub fn valid_name(id: &str, min: usize) -> bool {
    (min..=64).contains(&id.len())
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A semantic version (`MAJOR.MINOR.PATCH`, each at most 9 digits) as a key that sorts
/// as versions do.
pub fn version_key(version: &str) -> Option<String> {
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let numbers: Vec<u64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    Some(format!(
        "{:09}.{:09}.{:09}",
        numbers[0], numbers[1], numbers[2]
    ))
}

/// The canonical JSON of `value`: object keys sorted at every depth, no whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // serde_json writes an object's keys in its map's order: sorted above, whatever
    // the map type a feature of serde_json selects.
    sorted(value).to_string()
}

/// The attestation: SHA-256 of the canonical JSON, lowercase hex.
pub fn attestation(canonical: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

/// What a publisher signs.
pub fn signed_message(id: &str, version: &str, attestation: &str) -> String {
    format!("somagent-capsule:v1\n{id}\n{version}\n{attestation}")
}

/// True if `signature` (base64url, padded or not) is `public_key`'s (raw 32 bytes,
/// base64url) Ed25519 signature of this capsule version.
pub fn verify_signature(
    public_key: &str,
    id: &str,
    version: &str,
    attestation: &str,
    signature: &str,
) -> bool {
    let (Some(public), Some(signature)) = (decode_b64url(public_key), decode_b64url(signature))
    else {
        return false;
    };
    public.len() == 32
        && crate::auth::verify_ed25519(
            &public,
            signed_message(id, version, attestation).as_bytes(),
            &signature,
        )
}

/// base64url with or without padding (standard base64 too: publishers' tools differ).
pub fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim().trim_end_matches('=');
    data_encoding::BASE64URL_NOPAD
        .decode(trimmed.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(trimmed.as_bytes()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent() -> Value {
        json!({"id": "helper", "version": "1.2.3", "kind": "agent", "name": "Helper",
               "persona": "You help.", "tools": ["github", "slack__post_message"]})
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": "é"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"é","d":[{"y":2,"z":1}]},"b":1}"#
        );
        // The same document written in another order attests the same.
        let b: Value =
            serde_json::from_str(r#"{"b":1,"a":{"c":"é","d":[{"y":2,"z":1}]}}"#).unwrap();
        assert_eq!(
            attestation(&canonical_json(&a)),
            attestation(&canonical_json(&b))
        );
        assert_eq!(
            attestation("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_definition_is_checked_field_by_field() {
        assert!(Definition::parse(&agent()).is_ok());
        for (change, field) in [
            (json!({"id": "Has Caps"}), "id"),
            (json!({"version": "1.2"}), "version"),
            (json!({"persona": " "}), "persona"),
            (json!({"kind": "planner"}), "prompts.plan"),
            (json!({"tools": ["a b"]}), "tools"),
            (json!({"input_schema": 3}), "input_schema"),
            (json!({"surprise": true}), "definition"),
        ] {
            let mut d = agent();
            for (k, v) in change.as_object().unwrap() {
                d[k] = v.clone();
            }
            assert_eq!(Definition::parse(&d).unwrap_err().0, field, "{change}");
        }
    }

    #[test]
    fn versions_sort_as_versions() {
        let (a, b) = (
            version_key("1.10.0").unwrap(),
            version_key("1.9.12").unwrap(),
        );
        assert!(a > b);
        for bad in ["1.0", "1.0.0-beta", "a.b.c", "1..2", "1234567890.0.0"] {
            assert!(version_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_input_renders_into_the_first_message() {
        let mut d = Definition::parse(&agent()).unwrap();
        assert_eq!(d.render(&json!({"q": 1})), r#"{"q":1}"#);
        d.prompt_template = Some("Write about {{topic}} in {{words}} words.{{missing}}".into());
        assert_eq!(
            d.render(&json!({"topic": "owls", "words": 50})),
            "Write about owls in 50 words."
        );
        assert_eq!(
            render("Criteria:\n{{c}}", &json!({"c": ["fast", "small"]})),
            "Criteria:\n- fast\n- small"
        );
    }

    #[test]
    fn tools_are_allowed_by_id_or_by_function() {
        let d = Definition::parse(&agent()).unwrap();
        assert!(d.allows_tool("github__create_issue"));
        assert!(d.allows_tool("slack__post_message"));
        assert!(!d.allows_tool("slack__delete_message"));
        assert!(!d.allows_tool("memory__remember"));
    }

    #[test]
    fn signatures_verify_for_this_version_only() {
        let key = crate::auth::SigningKey::generate().unwrap();
        let public = data_encoding::BASE64URL_NOPAD.encode(key.public_key());
        let hash = attestation("{}");
        let sig = data_encoding::BASE64URL_NOPAD
            .encode(&key.sign_bytes(signed_message("a1", "1.0.0", &hash).as_bytes()));
        assert!(verify_signature(&public, "a1", "1.0.0", &hash, &sig));
        assert!(!verify_signature(&public, "a1", "1.0.1", &hash, &sig));
        assert!(!verify_signature(
            &public,
            "a1",
            "1.0.0",
            &attestation("[]"),
            &sig
        ));
        assert!(!verify_signature(
            "bm90IGEga2V5",
            "a1",
            "1.0.0",
            &hash,
            &sig
        ));
    }
}
