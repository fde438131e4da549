//! The warehouse's tables, their columns once for both engines. Every table has
//! `event_id`, `tenant` and `time_ms`: each event is kept once, read per tenant, and
//! asked about by time.

use serde_json::Value;

use crate::domain::rows::Row;

/// A column's type: text, a signed or an unsigned whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Text,
    Int,
    UInt,
    /// Only in results: ClickHouse's `Array(Float64)` of percentiles.
    Floats,
}

#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The name clients export it by.
    pub dataset: &'static str,
    pub columns: &'static [(&'static str, Col)],
}

use Col::{Int, Text, UInt};

const COMMON: [(&str, Col); 3] = [("event_id", Text), ("tenant", Text), ("time_ms", Int)];

macro_rules! table {
    ($name:literal, $dataset:literal, [$(($col:literal, $kind:expr)),* $(,)?]) => {
        Table {
            name: $name,
            dataset: $dataset,
            columns: &[COMMON[0], COMMON[1], COMMON[2], $(($col, $kind)),*],
        }
    };
}

pub static EVENTS: Table = table!(
    "an_events",
    "events",
    [
        ("topic", Text),
        ("kind", Text),
        ("source", Text),
        ("subject", Text),
    ]
);
pub static USAGE: Table = table!(
    "an_usage",
    "usage",
    [
        ("user_id", Text),
        ("session_id", Text),
        ("project_id", Text),
        ("kind", Text),
        ("item", Text),
        ("upstream", Text),
        ("model", Text),
        ("prompt_tokens", UInt),
        ("completion_tokens", UInt),
        ("cost_micros", Int),
        ("currency", Text),
        ("latency_ms", UInt),
    ]
);
pub static TURNS: Table = table!(
    "an_turns",
    "turns",
    [
        ("user_id", Text),
        ("session_id", Text),
        ("turn", UInt),
        ("outcome", Text),
        ("error_code", Text),
        ("duration_ms", UInt),
        ("prompt_tokens", UInt),
        ("completion_tokens", UInt),
        ("cost_micros", Int),
    ]
);
pub static DECISIONS: Table = table!(
    "an_decisions",
    "decisions",
    [
        ("user_id", Text),
        ("action", Text),
        ("tool", Text),
        ("allowed", UInt),
        ("severity", Text),
        ("score", Int),
        ("rule_ids", Text),
        ("session_id", Text),
    ]
);
pub static MODEL_FAILURES: Table = table!(
    "an_model_failures",
    "model_failures",
    [
        ("user_id", Text),
        ("kind", Text),
        ("profile", Text),
        ("upstream", Text),
        ("failure", Text),
        ("status", UInt),
        ("latency_ms", UInt),
    ]
);
pub static TOOL_CALLS: Table = table!(
    "an_tool_calls",
    "tool_calls",
    [
        ("user_id", Text),
        ("tool", Text),
        ("action", Text),
        ("result", Text),
        ("status", UInt),
        ("duration_ms", UInt),
    ]
);
pub static WORKFLOWS: Table = table!(
    "an_workflows",
    "workflows",
    [
        ("user_id", Text),
        ("kind", Text),
        ("workflow_id", Text),
        ("status", Text),
    ]
);
pub static GOVERNANCE: Table = table!(
    "an_governance",
    "governance",
    [("user_id", Text), ("kind", Text), ("detail", Text),]
);

pub static TABLES: &[&Table] = &[
    &EVENTS,
    &USAGE,
    &TURNS,
    &DECISIONS,
    &MODEL_FAILURES,
    &TOOL_CALLS,
    &WORKFLOWS,
    &GOVERNANCE,
];

/// The table a dataset is exported from.
pub fn by_dataset(dataset: &str) -> Option<&'static Table> {
    TABLES.iter().copied().find(|t| t.dataset == dataset)
}

/// The table a row goes to, and the row as a JSON object of its columns.
pub fn of(row: &Row) -> (&'static Table, Value) {
    match row {
        Row::Event(r) => (&EVENTS, json(r)),
        Row::Usage(r) => (&USAGE, json(r)),
        Row::Turn(r) => (&TURNS, json(r)),
        Row::Decision(r) => (&DECISIONS, json(r)),
        Row::ModelFailure(r) => (&MODEL_FAILURES, json(r)),
        Row::ToolCall(r) => (&TOOL_CALLS, json(r)),
        Row::Workflow(r) => (&WORKFLOWS, json(r)),
        Row::Governance(r) => (&GOVERNANCE, json(r)),
    }
}

/// A row's columns as a JSON object.
fn json<T: serde::Serialize>(row: &T) -> Value {
    serde_json::to_value(row).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use somagent_common::infra::events::{Envelope, topics};
    use somagent_common::tenant::TenantId;

    use super::*;
    use crate::domain::rows::rows_of;

    /// Each row's fields are its table's columns, in any order, none missing or extra.
    #[test]
    fn rows_and_tables_agree() {
        let tenant = TenantId::parse("acme").unwrap();
        let samples = [
            (
                topics::BILLING_USAGE,
                Envelope::new(
                    "slm.usage",
                    "slm",
                    tenant.clone(),
                    serde_json::json!({"kind": "model"}),
                ),
            ),
            (
                topics::CONVERSATION,
                Envelope::new("turn.completed", "o", tenant.clone(), serde_json::json!({})),
            ),
            (
                topics::CONVERSATION,
                Envelope::new(
                    "tool.approval_resolved",
                    "o",
                    tenant.clone(),
                    serde_json::json!({}),
                ),
            ),
            (
                topics::AUDIT,
                Envelope::new(
                    "policy.decision",
                    "p",
                    tenant.clone(),
                    serde_json::json!({}),
                ),
            ),
            (
                topics::AUDIT,
                Envelope::new(
                    "slm.call_failed",
                    "s",
                    tenant.clone(),
                    serde_json::json!({}),
                ),
            ),
            (
                topics::AUDIT,
                Envelope::new("tool.invoked", "t", tenant.clone(), serde_json::json!({})),
            ),
            (
                topics::WORKFLOW,
                Envelope::new("project.completed", "o", tenant, serde_json::json!({})),
            ),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (topic, event) in &samples {
            for row in rows_of(topic, event) {
                let (table, value) = of(&row);
                let mut fields: Vec<&str> = value
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                let mut columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
                fields.sort_unstable();
                columns.sort_unstable();
                assert_eq!(fields, columns, "{}", table.name);
                seen.insert(table.name);
            }
        }
        assert_eq!(seen.len(), TABLES.len(), "{seen:?}");
    }
}
