//! Decisions: the tenant's compiled policy (constitution + rules), evaluated for one
//! input, cached, audited, and denied whenever anything goes wrong (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Value, json};
use somagent_common::audit::{AuditRecord, Outcome};
use somagent_common::auth::Principal;
use somagent_common::constitution::{Constitution, Severity};
use somagent_common::error::ApiError;
use somagent_common::infra::events::EventBus;
use somagent_common::metrics::Metrics;
use somagent_common::proto::constitution::v1 as cpb;
use somagent_common::proto::constitution::v1::constitution_service_client::ConstitutionServiceClient;
use somagent_common::tenant::TenantId;

use crate::domain::rego::{Compiled, compile};
use crate::engine::Engine;
use crate::store::RuleStore;

/// How long a compiled policy or a decision is reused without news of a change.
const FRESH: Duration = Duration::from_secs(60);
/// Past this, the engine's answer is not waited for: the request is denied.
const DEADLINE: Duration = Duration::from_secs(1);
/// Fetching, compiling and loading a tenant's policy (once a minute per tenant, and
/// slower on a cold start) is bounded on its own, so it does not eat the decision's
/// deadline; past it the request is denied too.
const PREPARE: Duration = Duration::from_secs(10);
/// Past this, a decision whose audit record the bus has not taken is denied.
const AUDIT_WITHIN: Duration = Duration::from_secs(2);

/// Why no decision came from the engine.
enum Unanswered {
    TimedOut(&'static str),
    Failed(anyhow::Error),
}
const MAX_CACHED: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub score: u32,
    pub severity: Option<Severity>,
    pub reasons: Vec<String>,
    pub rule_ids: Vec<String>,
    pub flagged: Vec<String>,
    pub constitution_hash: String,
}

impl Decision {
    fn fail_closed(why: &str, constitution_hash: String) -> Self {
        Self {
            allowed: false,
            score: 100,
            severity: Some(Severity::Critical),
            reasons: vec![format!(
                "the policy could not be evaluated ({why}); denied to be safe"
            )],
            rule_ids: vec!["policy.unavailable".into()],
            flagged: Vec::new(),
            constitution_hash,
        }
    }

    /// From the engine's decision document.
    fn from_document(doc: &Value, constitution_hash: &str) -> Option<Self> {
        let mut findings: Vec<&Value> = doc.get("findings")?.as_array()?.iter().collect();
        findings.sort_by(|a, b| {
            b["score"]
                .as_u64()
                .cmp(&a["score"].as_u64())
                .then(a["id"].as_str().cmp(&b["id"].as_str()))
        });
        let text = |f: &Value, k: &str| f[k].as_str().unwrap_or_default().to_owned();
        Some(Self {
            allowed: doc.get("allowed")?.as_bool()?,
            score: doc.get("score")?.as_u64()? as u32,
            severity: findings
                .iter()
                .filter_map(|f| Severity::parse(f["severity"].as_str()?))
                .max(),
            reasons: findings.iter().map(|f| text(f, "reason")).collect(),
            rule_ids: findings.iter().map(|f| text(f, "id")).collect(),
            flagged: findings
                .iter()
                .map(|f| text(f, "flagged"))
                .filter(|f| !f.is_empty())
                .collect(),
            constitution_hash: constitution_hash.to_owned(),
        })
    }
}

/// A cached decision's key: the tenant and a digest of the input.
type DecisionKey = (TenantId, [u8; 16]);

/// What is being decided about.
#[derive(Debug, Clone)]
pub struct Question {
    pub action: String,
    pub text: String,
    pub tool: String,
    pub session_id: String,
}

/// Decisions by action and result, on policy's `/metrics`.
#[derive(Clone)]
struct DecisionMetrics {
    decisions: Family<DecisionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: String,
    result: &'static str,
    /// Whether the decision came from this replica's short-lived cache.
    cached: &'static str,
}

impl DecisionMetrics {
    fn register(metrics: &Metrics) -> Self {
        let decisions = Family::default();
        metrics.register(
            "policy_decisions",
            "Policy decisions, by action (prompt, completion, tool), result (allowed, denied) and whether cached",
            decisions.clone(),
        );
        Self { decisions }
    }

    fn count(&self, action: &str, decision: &Decision, cached: bool) {
        self.decisions
            .get_or_create(&DecisionLabels {
                action: action.to_owned(),
                result: if decision.allowed {
                    "allowed"
                } else {
                    "denied"
                },
                cached: if cached { "true" } else { "false" },
            })
            .inc();
    }
}

pub struct PolicyDecider {
    metrics: DecisionMetrics,
    engine: Engine,
    rules: RuleStore,
    constitutions: ConstitutionServiceClient<somagent_common::grpc_channel::Channel>,
    compiled: Mutex<HashMap<TenantId, (Instant, Arc<Compiled>)>>,
    decisions: Mutex<HashMap<DecisionKey, (Instant, Decision)>>,
    events: EventBus,
}

impl PolicyDecider {
    pub fn new(
        engine: Engine,
        rules: RuleStore,
        constitutions: ConstitutionServiceClient<somagent_common::grpc_channel::Channel>,
        events: EventBus,
        metrics: &Metrics,
    ) -> Self {
        Self {
            metrics: DecisionMetrics::register(metrics),
            engine,
            rules,
            constitutions,
            compiled: Mutex::default(),
            decisions: Mutex::default(),
            events,
        }
    }

    pub fn rules(&self) -> &RuleStore {
        &self.rules
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Forgets what was compiled and decided for `tenant` (its constitution or rules
    /// changed).
    pub fn invalidate(&self, tenant: &TenantId) {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
        self.decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(t, _), _| t != tenant);
    }

    /// The decision for `question` asked by `principal` (whose `token` reads the
    /// constitution). Only a malformed question is an error; anything else that goes
    /// wrong is a denial.
    pub async fn decide(
        &self,
        principal: &Principal,
        token: &str,
        q: &Question,
    ) -> Result<Decision, ApiError> {
        if !matches!(q.action.as_str(), "prompt" | "completion" | "tool") {
            return Err(ApiError::validation(
                "action",
                "is `prompt`, `completion` or `tool`",
            ));
        }
        if q.action == "tool" && q.tool.is_empty() {
            return Err(ApiError::validation(
                "tool",
                "names the tool for action `tool`",
            ));
        }
        let tenant = &principal.tenant;
        let roles: Vec<&str> = principal.roles.iter().map(|r| r.as_str()).collect();
        let question =
            json!({ "action": q.action, "text": q.text, "tool": q.tool, "roles": roles });
        let key = (tenant.clone(), digest(&question));
        let cached = self
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, decision)| decision.clone());
        if let Some(cached) = cached {
            let decision = self.audited(principal, q, cached).await;
            self.metrics.count(&q.action, &decision, true);
            return Ok(decision);
        }
        let decision = match self.evaluate(tenant, token, q, &roles).await {
            Ok(decision) => {
                let mut cache = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), decision.clone()));
                decision
            }
            Err(Unanswered::Failed(e)) => {
                tracing::error!(error = %e, tenant = tenant.as_str(), "policy evaluation failed; denying");
                Decision::fail_closed("engine error", String::new())
            }
            Err(Unanswered::TimedOut(stage)) => {
                tracing::error!(
                    tenant = tenant.as_str(),
                    stage,
                    "policy evaluation timed out; denying"
                );
                Decision::fail_closed("timeout", String::new())
            }
        };
        let decision = self.audited(principal, q, decision).await;
        self.metrics.count(&q.action, &decision, false);
        Ok(decision)
    }

    /// `decision` once its `agent.audit` record is durable; a denial if the record
    /// cannot be written, since an unrecorded decision is not one to act on. A cached
    /// decision is a decision too, and recorded like the others. Publishes wait for the
    /// log's group commit, so concurrent decisions share one write.
    async fn audited(&self, principal: &Principal, q: &Question, decision: Decision) -> Decision {
        let record = self.record(principal, q, &decision);
        let why =
            match tokio::time::timeout(AUDIT_WITHIN, record.publish_durably(&self.events)).await {
                Ok(Ok(())) => return decision,
                Ok(Err(e)) => e.to_string(),
                // The record may still land, saying what was decided before the denial.
                Err(_) => format!("no answer from the bus within {AUDIT_WITHIN:?}"),
            };
        tracing::error!(error = %why, tenant = principal.tenant.as_str(), "a decision could not be audited; denying");
        Decision::fail_closed("audit unavailable", decision.constitution_hash)
    }

    async fn evaluate(
        &self,
        tenant: &TenantId,
        token: &str,
        q: &Question,
        roles: &[&str],
    ) -> Result<Decision, Unanswered> {
        let compiled = tokio::time::timeout(PREPARE, self.compiled_for(tenant, token))
            .await
            .map_err(|_| Unanswered::TimedOut("preparing the tenant's policy"))?
            .map_err(Unanswered::Failed)?;
        let question = crate::engine::Question {
            action: q.action.clone(),
            text: q.text.clone(),
            tool: q.tool.clone(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        let document = tokio::time::timeout(DEADLINE, self.engine.decide(&compiled, question))
            .await
            .map_err(|_| Unanswered::TimedOut("deciding"))?
            .map_err(Unanswered::Failed)?;
        Decision::from_document(&document, &compiled.constitution_hash).ok_or_else(|| {
            Unanswered::Failed(anyhow::anyhow!(
                "the engine's decision has an unexpected shape: {document}"
            ))
        })
    }

    /// The tenant's compiled policy, as decisions use it (`token` reads the
    /// constitution); bounded like a decision's preparation.
    pub async fn compiled(&self, tenant: &TenantId, token: &str) -> anyhow::Result<Arc<Compiled>> {
        tokio::time::timeout(PREPARE, self.compiled_for(tenant, token))
            .await
            .map_err(|_| anyhow::anyhow!("preparing the tenant's policy timed out"))?
    }

    async fn compiled_for(&self, tenant: &TenantId, token: &str) -> anyhow::Result<Arc<Compiled>> {
        if let Some((at, compiled)) = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            && at.elapsed() < FRESH
        {
            return Ok(compiled.clone());
        }
        let request = somagent_common::auth::grpc::with_bearer(
            token,
            tonic::Request::new(cpb::GetCurrentRequest {}),
        );
        let current = self
            .constitutions
            .clone()
            .get_current(request)
            .await?
            .into_inner();
        let constitution: Constitution = serde_json::from_str(&current.document_json)?;
        let rules = self.rules.list(tenant).await?;
        let compiled = Arc::new(compile(
            tenant.as_str(),
            &constitution,
            &current.hash,
            &rules,
        ));
        self.engine.prepare(&compiled).await?;
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.clone(), (Instant::now(), compiled.clone()));
        Ok(compiled)
    }

    /// Every decision is an `agent.audit` event; never with the text, which may hold
    /// anything.
    fn record(&self, principal: &Principal, q: &Question, d: &Decision) -> AuditRecord {
        let resource = if q.action == "tool" { "tool" } else { "text" };
        AuditRecord::by("policy", "policy.decision", principal)
            .with("actor_service", &principal.actor)
            .on(resource, Some(q.tool.as_str()).filter(|t| !t.is_empty()))
            .action(format!("policy.evaluate:{}", q.action))
            .outcome(if d.allowed {
                Outcome::Allowed
            } else {
                Outcome::Denied
            })
            .with("score", d.score)
            .with("severity", d.severity.map(Severity::as_str))
            .with("rule_ids", &d.rule_ids)
            .with(
                "session_id",
                Some(q.session_id.as_str()).filter(|s| !s.is_empty()),
            )
            .with("constitution_hash", &d.constitution_hash)
    }
}

fn digest(input: &Value) -> [u8; 16] {
    let full = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input.to_string().as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_ref()[..16]);
    out
}

/// The decision of an engine's document, for the engine contract suite.
#[cfg(test)]
pub fn tests_decision(document: &Value, hash: &str) -> Decision {
    Decision::from_document(document, hash).expect("a decision document")
}
