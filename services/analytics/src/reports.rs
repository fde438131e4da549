//! The questions analytics answers, each for one tenant in a bounded period, written
//! once for both engines: usage over time, sessions and turns, policy decisions, model
//! upstreams, tools, workflow runs, the governance report, and exports.

use serde_json::{Value, json};
use somagent_common::clock::rfc3339_ms;
use somagent_common::error::ApiError;

use crate::domain::governance::{
    Approval, BudgetEvent, ConstitutionVersion, Count, GovernanceReport,
};
use crate::domain::period::Period;
use crate::warehouse::{Cell, Col, Query, Table, Warehouse, WarehouseError};

impl From<WarehouseError> for ApiError {
    fn from(e: WarehouseError) -> Self {
        ApiError::unavailable("the analytics warehouse cannot answer right now", e)
    }
}

/// Groups one usage report may combine, and the lines it answers with at most (the
/// first ones, in order; `truncated` says when there were more: ask a shorter period
/// or a longer interval).
const MAX_GROUPS: usize = 3;
const MAX_LINES: usize = 10_000;

const TENANT_AND_PERIOD: &str = "tenant = ? AND time_ms >= ? AND time_ms < ?";

fn scoped(sql: String, tenant: &str, p: &Period, shape: &[Col]) -> Query {
    Query::new(sql, shape)
        .text(tenant)
        .int(p.from_ms)
        .int(p.to_ms)
}

/// What usage may be grouped by, and the column each is.
fn usage_group(name: &str) -> Result<(&'static str, &'static str), ApiError> {
    Ok(match name {
        "kind" => ("kind", "kind"),
        "model" => ("model", "item"),
        "tool" => ("tool", "item"),
        "user" => ("user", "user_id"),
        "session" => ("session", "session_id"),
        "upstream" => ("upstream", "upstream"),
        "project" => ("project", "project_id"),
        other => {
            return Err(ApiError::validation(
                "group_by",
                format!(
                    "`{other}` is not one of kind, model, tool, user, session, upstream, project"
                ),
            ));
        }
    })
}

/// Tokens, calls and cost, by bucket of time and by the groups asked for.
pub async fn usage(
    wh: &Warehouse,
    tenant: &str,
    p: &Period,
    interval: Option<i64>,
    group_by: &[String],
) -> Result<Value, ApiError> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for g in group_by {
        let group = usage_group(g)?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    if groups.len() > MAX_GROUPS {
        return Err(ApiError::validation(
            "group_by",
            format!("names at most {MAX_GROUPS} groups"),
        ));
    }
    let by_model = groups.iter().any(|(n, _)| *n == "model");
    let by_tool = groups.iter().any(|(n, _)| *n == "tool");
    if by_model && by_tool {
        return Err(ApiError::validation(
            "group_by",
            "group by model or by tool, not both",
        ));
    }
    let bucket = interval.map_or_else(|| "0".to_owned(), |ms| wh.bucket("time_ms", ms));
    let mut select = vec![format!("{bucket} AS b")];
    select.extend(groups.iter().map(|(_, c)| (*c).to_owned()));
    let group_cols: Vec<&str> = groups.iter().map(|(_, c)| *c).collect();
    let mut filter = TENANT_AND_PERIOD.to_owned();
    if by_model {
        filter.push_str(" AND kind IN ('model', 'embedding')");
    }
    if by_tool {
        filter.push_str(" AND kind = 'tool'");
    }
    let mut grouping = vec!["b".to_owned()];
    grouping.extend(group_cols.iter().map(|c| (*c).to_owned()));
    grouping.push("currency".into());
    let sql = format!(
        "SELECT {}, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros), currency \
         FROM an_usage{} WHERE {filter} GROUP BY {g} ORDER BY {g} LIMIT {}",
        select.join(", "),
        wh.fin(),
        MAX_LINES + 1,
        g = grouping.join(", "),
    );
    let mut shape = vec![Col::Int];
    shape.extend(groups.iter().map(|_| Col::Text));
    shape.extend([Col::Int, Col::Int, Col::Int, Col::Int, Col::Text]);
    let rows = wh.fetch(&scoped(sql, tenant, p, &shape)).await?;
    let n = groups.len();
    let truncated = rows.len() > MAX_LINES;
    let lines: Vec<Value> = rows
        .iter()
        .take(MAX_LINES)
        .map(|r| {
            let mut line = json!({
                "calls": r[n + 1].int(),
                "prompt_tokens": r[n + 2].int(),
                "completion_tokens": r[n + 3].int(),
                "cost_micros": r[n + 4].int(),
                "currency": r[n + 5].text(),
            });
            if interval.is_some() {
                line["at"] = json!(rfc3339_ms(r[0].int()));
            }
            let group: serde_json::Map<String, Value> = groups
                .iter()
                .enumerate()
                .map(|(i, (name, _))| ((*name).to_owned(), json!(r[i + 1].text())))
                .collect();
            line["group"] = Value::Object(group);
            line
        })
        .collect();
    Ok(json!({ "lines": lines, "truncated": truncated }))
}

/// Turns: how many, how they ended, why they failed, how long they took.
pub async fn sessions(
    wh: &Warehouse,
    tenant: &str,
    p: &Period,
    interval: Option<i64>,
) -> Result<Value, ApiError> {
    let f = wh.fin();
    let outcomes = wh
        .fetch(&scoped(
            format!(
                "SELECT outcome, error_code, count(*), sum(prompt_tokens + completion_tokens), sum(cost_micros) \
                 FROM an_turns{f} WHERE {TENANT_AND_PERIOD} GROUP BY outcome, error_code ORDER BY outcome, error_code"
            ),
            tenant,
            p,
            &[Col::Text, Col::Text, Col::Int, Col::Int, Col::Int],
        ))
        .await?;
    let sessions = wh
        .fetch(&scoped(
            format!("SELECT count(DISTINCT session_id), count(DISTINCT user_id) FROM an_turns{f} WHERE {TENANT_AND_PERIOD}"),
            tenant,
            p,
            &[Col::Int, Col::Int],
        ))
        .await?;
    let latency = wh
        .percentiles(
            "an_turns",
            &[],
            "duration_ms",
            &format!("{TENANT_AND_PERIOD} AND duration_ms > 0"),
            &period_args(tenant, p),
        )
        .await?;
    let mut turns = 0;
    let mut by_outcome = serde_json::Map::new();
    let mut failures: Vec<Value> = Vec::new();
    let (mut tokens, mut cost) = (0, 0);
    for r in &outcomes {
        let n = r[2].int();
        turns += n;
        tokens += r[3].int();
        cost += r[4].int();
        let entry = by_outcome.entry(r[0].text()).or_insert(json!(0));
        *entry = json!(entry.as_i64().unwrap_or(0) + n);
        if r[0].text() == "failed" {
            failures.push(json!({ "reason": if r[1].text().is_empty() { "unknown".to_owned() } else { r[1].text() }, "count": n }));
        }
    }
    let mut report = json!({
        "turns": turns,
        "sessions": sessions.first().map_or(0, |r| r[0].int()),
        "users": sessions.first().map_or(0, |r| r[1].int()),
        "outcomes": by_outcome,
        "failures": failures,
        "tokens": tokens,
        "cost_micros": cost,
        "latency_ms": latency.first().map_or(json!(null), |(_, q)| json!({"p50": q[0], "p95": q[1], "p99": q[2]})),
    });
    if let Some(ms) = interval {
        let series = wh
            .fetch(&scoped(
                format!(
                    "SELECT {} AS b, count(*), sum(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END) \
                     FROM an_turns{f} WHERE {TENANT_AND_PERIOD} GROUP BY b ORDER BY b",
                    wh.bucket("time_ms", ms)
                ),
                tenant,
                p,
                &[Col::Int, Col::Int, Col::Int],
            ))
            .await?;
        report["series"] = series
            .iter()
            .map(|r| json!({"at": rfc3339_ms(r[0].int()), "turns": r[1].int(), "failed": r[2].int()}))
            .collect();
    }
    Ok(report)
}

fn period_args(tenant: &str, p: &Period) -> Vec<Cell> {
    vec![
        Cell::Text(tenant.to_owned()),
        Cell::Int(p.from_ms),
        Cell::Int(p.to_ms),
    ]
}

/// Denied rules, counted from the decisions' space-separated rule lists.
async fn denials_by_rule(wh: &Warehouse, tenant: &str, p: &Period) -> Result<Vec<Count>, ApiError> {
    let rows = wh
        .fetch(&scoped(
            format!(
                "SELECT rule_ids, count(*) FROM an_decisions{} WHERE {TENANT_AND_PERIOD} AND allowed = 0 \
                 AND rule_ids <> '' GROUP BY rule_ids",
                wh.fin()
            ),
            tenant,
            p,
            &[Col::Text, Col::Int],
        ))
        .await?;
    let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in rows {
        for rule in r[0].text().split_whitespace() {
            *counts.entry(rule.to_owned()).or_default() += r[1].int();
        }
    }
    Ok(sorted(
        counts
            .into_iter()
            .map(|(name, count)| Count { name, count })
            .collect(),
    ))
}

fn sorted(mut counts: Vec<Count>) -> Vec<Count> {
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    counts
}

/// Policy decisions: allowed and denied by action, denials by rule.
pub async fn decisions(wh: &Warehouse, tenant: &str, p: &Period) -> Result<Value, ApiError> {
    let rows = wh
        .fetch(&scoped(
            format!(
                "SELECT action, allowed, count(*) FROM an_decisions{} WHERE {TENANT_AND_PERIOD} \
                 GROUP BY action, allowed ORDER BY action, allowed",
                wh.fin()
            ),
            tenant,
            p,
            &[Col::Text, Col::Int, Col::Int],
        ))
        .await?;
    let mut actions: Vec<Value> = Vec::new();
    let (mut allowed, mut denied) = (0, 0);
    for r in &rows {
        let (action, ok, n) = (r[0].text(), r[1].int() == 1, r[2].int());
        if ok {
            allowed += n
        } else {
            denied += n
        }
        match actions.iter_mut().find(|a| a["action"] == action.as_str()) {
            Some(a) => a[if ok { "allowed" } else { "denied" }] = json!(n),
            None => actions.push(json!({"action": action, "allowed": if ok { n } else { 0 }, "denied": if ok { 0 } else { n }})),
        }
    }
    Ok(json!({
        "allowed": allowed,
        "denied": denied,
        "by_action": actions,
        "denied_by_rule": denials_by_rule(wh, tenant, p).await?,
    }))
}

/// Model calls per profile and upstream: calls, failed tries, error rate, latency.
pub async fn models(wh: &Warehouse, tenant: &str, p: &Period) -> Result<Value, ApiError> {
    let f = wh.fin();
    let calls = wh
        .fetch(&scoped(
            format!(
                "SELECT item, upstream, count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros) \
                 FROM an_usage{f} WHERE {TENANT_AND_PERIOD} AND kind IN ('model', 'embedding') \
                 GROUP BY item, upstream ORDER BY item, upstream"
            ),
            tenant,
            p,
            &[Col::Text, Col::Text, Col::Int, Col::Int, Col::Int, Col::Int],
        ))
        .await?;
    let failures = wh
        .fetch(&scoped(
            format!(
                "SELECT profile, upstream, failure, count(*) FROM an_model_failures{f} WHERE {TENANT_AND_PERIOD} \
                 GROUP BY profile, upstream, failure ORDER BY profile, upstream, failure"
            ),
            tenant,
            p,
            &[Col::Text, Col::Text, Col::Text, Col::Int],
        ))
        .await?;
    let latency = wh
        .percentiles(
            "an_usage",
            &["item", "upstream"],
            "latency_ms",
            &format!("{TENANT_AND_PERIOD} AND kind IN ('model', 'embedding') AND latency_ms > 0"),
            &period_args(tenant, p),
        )
        .await?;
    let mut lines: Vec<Value> = Vec::new();
    let line_of = |profile: &str, upstream: &str, lines: &mut Vec<Value>| -> usize {
        if let Some(i) = lines
            .iter()
            .position(|l| l["profile"] == profile && l["upstream"] == upstream)
        {
            return i;
        }
        lines.push(json!({"profile": profile, "upstream": upstream, "calls": 0, "failed_tries": 0,
                          "failures": {}, "prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 0}));
        lines.len() - 1
    };
    for r in &calls {
        let i = line_of(&r[0].text(), &r[1].text(), &mut lines);
        lines[i]["calls"] = json!(r[2].int());
        lines[i]["prompt_tokens"] = json!(r[3].int());
        lines[i]["completion_tokens"] = json!(r[4].int());
        lines[i]["cost_micros"] = json!(r[5].int());
    }
    for r in &failures {
        let i = line_of(&r[0].text(), &r[1].text(), &mut lines);
        let n = r[3].int();
        lines[i]["failed_tries"] = json!(lines[i]["failed_tries"].as_i64().unwrap_or(0) + n);
        lines[i]["failures"][r[2].text()] = json!(n);
    }
    for line in &mut lines {
        let calls = line["calls"].as_i64().unwrap_or(0);
        let failed = line["failed_tries"].as_i64().unwrap_or(0);
        // Each answered call is a try that worked: the share of tries that failed.
        line["error_rate"] = json!(if calls + failed == 0 {
            0.0
        } else {
            failed as f64 / (calls + failed) as f64
        });
        if let Some((_, q)) = latency
            .iter()
            .find(|(k, _)| k[0] == line["profile"] && k[1] == line["upstream"])
        {
            line["latency_ms"] = json!({"p50": q[0], "p95": q[1], "p99": q[2]});
        }
    }
    Ok(json!({ "upstreams": lines }))
}

/// Tool calls per tool and action: how they ended and how long they took.
pub async fn tools(wh: &Warehouse, tenant: &str, p: &Period) -> Result<Value, ApiError> {
    let rows = wh
        .fetch(&scoped(
            format!(
                "SELECT tool, action, result, count(*) FROM an_tool_calls{} WHERE {TENANT_AND_PERIOD} \
                 GROUP BY tool, action, result ORDER BY tool, action, result",
                wh.fin()
            ),
            tenant,
            p,
            &[Col::Text, Col::Text, Col::Text, Col::Int],
        ))
        .await?;
    let latency = wh
        .percentiles(
            "an_tool_calls",
            &["tool", "action"],
            "duration_ms",
            TENANT_AND_PERIOD,
            &period_args(tenant, p),
        )
        .await?;
    let mut lines: Vec<Value> = Vec::new();
    for r in &rows {
        let (tool, action) = (r[0].text(), r[1].text());
        let i = match lines
            .iter()
            .position(|l| l["tool"] == tool.as_str() && l["action"] == action.as_str())
        {
            Some(i) => i,
            None => {
                lines.push(json!({"tool": tool, "action": action, "calls": 0, "results": {}}));
                lines.len() - 1
            }
        };
        lines[i]["calls"] = json!(lines[i]["calls"].as_i64().unwrap_or(0) + r[3].int());
        lines[i]["results"][r[2].text()] = json!(r[3].int());
    }
    for line in &mut lines {
        if let Some((_, q)) = latency
            .iter()
            .find(|(k, _)| k[0] == line["tool"] && k[1] == line["action"])
        {
            line["duration_ms"] = json!({"p50": q[0], "p95": q[1], "p99": q[2]});
        }
    }
    Ok(json!({ "tools": lines }))
}

/// Workflow runs and tasks by kind and how they stand.
pub async fn workflows(wh: &Warehouse, tenant: &str, p: &Period) -> Result<Value, ApiError> {
    let rows = wh
        .fetch(&scoped(
            format!(
                "SELECT kind, count(*), count(DISTINCT workflow_id) FROM an_workflows{} WHERE {TENANT_AND_PERIOD} \
                 GROUP BY kind ORDER BY kind",
                wh.fin()
            ),
            tenant,
            p,
            &[Col::Text, Col::Int, Col::Int],
        ))
        .await?;
    Ok(json!({
        "events": rows.iter().map(|r| json!({"kind": r[0].text(), "count": r[1].int(), "runs": r[2].int()})).collect::<Vec<_>>(),
    }))
}

/// The tenant's governance report.
pub async fn governance(
    wh: &Warehouse,
    tenant: &str,
    p: &Period,
) -> Result<GovernanceReport, ApiError> {
    let f = wh.fin();
    let totals = wh
        .fetch(&scoped(
            format!("SELECT count(*), sum(CASE WHEN allowed = 0 THEN 1 ELSE 0 END) FROM an_decisions{f} WHERE {TENANT_AND_PERIOD}"),
            tenant,
            p,
            &[Col::Int, Col::Int],
        ))
        .await?;
    let by_action = wh
        .fetch(&scoped(
            format!("SELECT action, count(*) FROM an_decisions{f} WHERE {TENANT_AND_PERIOD} AND allowed = 0 GROUP BY action"),
            tenant,
            p,
            &[Col::Text, Col::Int],
        ))
        .await?;
    let strikes = wh
        .fetch(&scoped(
            format!(
                "SELECT user_id, count(*) FROM an_decisions{f} WHERE {TENANT_AND_PERIOD} AND allowed = 0 \
                 AND action = 'prompt' GROUP BY user_id"
            ),
            tenant,
            p,
            &[Col::Text, Col::Int],
        ))
        .await?;
    let listed = wh
        .fetch(&scoped(
            format!(
                "SELECT kind, time_ms, detail FROM an_governance{f} WHERE {TENANT_AND_PERIOD} \
                 ORDER BY time_ms, event_id LIMIT 10000"
            ),
            tenant,
            p,
            &[Col::Text, Col::Int, Col::Text],
        ))
        .await?;
    // The constitution in force when the period began.
    let before = wh
        .fetch(
            &Query::new(
                format!(
                    "SELECT time_ms, detail FROM an_governance{f} WHERE tenant = ? AND kind = 'constitution' \
                     AND time_ms < ? ORDER BY time_ms DESC LIMIT 1"
                ),
                &[Col::Int, Col::Text],
            )
            .text(tenant)
            .int(p.from_ms),
        )
        .await?;
    let counts = |rows: Vec<Vec<Cell>>| {
        sorted(
            rows.iter()
                .map(|r| Count {
                    name: r[0].text(),
                    count: r[1].int(),
                })
                .collect(),
        )
    };
    let mut report = GovernanceReport {
        tenant: tenant.to_owned(),
        from: rfc3339_ms(p.from_ms),
        to: rfc3339_ms(p.to_ms),
        decisions: totals.first().map_or(0, |r| r[0].int()),
        denials: totals.first().map_or(0, |r| r[1].int()),
        denials_by_action: counts(by_action),
        denials_by_rule: denials_by_rule(wh, tenant, p).await?,
        moderation_strikes: counts(strikes),
        ..GovernanceReport::default()
    };
    let constitution = |at: i64, detail: &Value| ConstitutionVersion {
        published_at: rfc3339_ms(at),
        version: match &detail["version"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        hash: detail["hash"].as_str().unwrap_or_default().to_owned(),
    };
    for r in &before {
        let detail: Value = serde_json::from_str(&r[1].text()).unwrap_or(Value::Null);
        report.constitutions.push(constitution(r[0].int(), &detail));
    }
    for r in &listed {
        let at = r[1].int();
        let detail: Value = serde_json::from_str(&r[2].text()).unwrap_or(Value::Null);
        let s = |k: &str| detail[k].as_str().unwrap_or_default().to_owned();
        match r[0].text().as_str() {
            "approval" => report.approvals.push(Approval {
                at: rfc3339_ms(at),
                session_id: s("session_id"),
                call_id: s("call_id"),
                approved: detail["approved"].as_bool().unwrap_or(false),
                by: s("by"),
            }),
            "budget" => report.budget_events.push(BudgetEvent {
                at: rfc3339_ms(at),
                budget: s("budget"),
                threshold: s("threshold"),
                period: s("period"),
                spent: detail["spent"].as_i64().unwrap_or(0),
                limit: detail["limit"].as_i64().unwrap_or(0),
            }),
            "constitution" => report.constitutions.push(constitution(at, &detail)),
            "project" => report.projects.push(project_run(at, &detail)),
            _ => {}
        }
    }
    Ok(report)
}

/// A project's end, from its governance row.
fn project_run(at: i64, detail: &Value) -> crate::domain::governance::ProjectRun {
    let deliverables = detail["deliverables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let scores: Vec<f64> = deliverables
        .iter()
        .filter_map(|d| d["score"].as_f64())
        .collect();
    crate::domain::governance::ProjectRun {
        at: rfc3339_ms(at),
        project_id: detail["project_id"].as_str().unwrap_or_default().to_owned(),
        status: detail["status"].as_str().unwrap_or_default().to_owned(),
        denied: detail["denied"].as_i64().unwrap_or(0),
        approval: detail["approval"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        approved_by: detail["approval"]["by"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        tokens_limit: detail["budget"]["limit"].as_i64().unwrap_or(0),
        tokens_spent: detail["budget"]["spent"].as_i64().unwrap_or(0),
        delivered: deliverables
            .iter()
            .filter(|d| d["state"] == "completed")
            .count() as i64,
        deliverables: deliverables.len() as i64,
        mean_score: (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
    }
}

/// One page of a dataset, oldest first, after `(time_ms, event_id)`: its rows as
/// cells in the table's column order.
pub async fn export_page(
    wh: &Warehouse,
    table: &Table,
    tenant: &str,
    p: &Period,
    after: Option<(i64, String)>,
    limit: usize,
) -> Result<Vec<Vec<Cell>>, ApiError> {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let shape: Vec<Col> = table.columns.iter().map(|(_, k)| *k).collect();
    let mut sql = format!(
        "SELECT {} FROM {}{} WHERE {TENANT_AND_PERIOD}",
        columns.join(", "),
        table.name,
        wh.fin()
    );
    if after.is_some() {
        sql.push_str(" AND (time_ms > ? OR (time_ms = ? AND event_id > ?))");
    }
    sql.push_str(&format!(" ORDER BY time_ms, event_id LIMIT {limit}"));
    let mut q = scoped(sql, tenant, p, &shape);
    if let Some((at, id)) = after {
        q = q.int(at).int(at).text(id);
    }
    Ok(wh.fetch(&q).await?)
}
