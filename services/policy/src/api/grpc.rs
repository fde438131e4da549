//! policy's gRPC surface: decisions and the tenant's own rules. Every call verifies the
//! token it carries; rule changes reach every replica's caches through the bus.

use std::sync::Arc;

use somagent_common::audit::AuditRecord;
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal, ServiceTokens};
use somagent_common::constitution::Severity;
use somagent_common::error::ApiError;
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::proto::policy::v1 as pb;
use somagent_common::proto::policy::v1::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use crate::decider::{PolicyDecider, Question};
use crate::domain::rules::{Rule, RuleKind};

pub struct PolicyGrpc {
    pub decider: Arc<PolicyDecider>,
    pub events: EventBus,
    /// Policy's own tokens for reading a constitution for a service's user.
    pub tokens: ServiceTokens,
}

fn rule_message(r: Rule) -> pb::Rule {
    pb::Rule {
        id: r.id,
        name: r.name,
        description: r.description,
        kind: r.kind.as_str().into(),
        value: r.value,
        severity: r.severity.as_str().into(),
        score: r.score,
        enabled: r.enabled,
        updated_at: somagent_common::clock::rfc3339(r.updated_at),
    }
}

fn rule_of(id: String, r: pb::Rule) -> Result<Rule, ApiError> {
    let rule = Rule {
        id,
        name: r.name,
        description: r.description,
        kind: RuleKind::parse(&r.kind).ok_or_else(|| {
            ApiError::validation(
                "kind",
                "is `forbidden_term`, `forbidden_pattern` or `deny_tool`",
            )
        })?,
        value: r.value,
        severity: Severity::parse(&r.severity).ok_or_else(|| {
            ApiError::validation("severity", "is `low`, `medium`, `high` or `critical`")
        })?,
        score: r.score,
        enabled: r.enabled,
        updated_at: somagent_common::clock::unix_now(),
    };
    rule.validate()
        .map_err(|(field, message)| ApiError::validation(field, message))?;
    Ok(rule)
}

impl PolicyGrpc {
    /// The token that reads the constitution for `principal`: a user's own token goes
    /// on as it came; a service token was meant for policy alone, so policy asks identity
    /// for one of its own, for the constitution service.
    async fn constitution_token<T>(
        &self,
        principal: &Principal,
        request: &Request<T>,
    ) -> Result<String, Status> {
        if principal.actor.is_none() {
            return Ok(somagent_common::auth::grpc::bearer_of(request)
                .unwrap_or_default()
                .to_owned());
        }
        self.tokens
            .for_user(
                &somagent_common::service::CONSTITUTION,
                &principal.tenant,
                &principal.subject,
                &[Capability::ConstitutionRead.as_str().to_owned()],
            )
            .await
            .map_err(|status| {
                Status::new(
                    status.code(),
                    format!(
                        "the constitution cannot be read for this user: {}",
                        status.message()
                    ),
                )
            })
    }

    /// Drops this replica's caches for the tenant now and tells the others.
    async fn changed(&self, principal: &Principal, rule_id: &str, action: &str) {
        self.decider.invalidate(&principal.tenant);
        let event = Envelope::new(
            "policy.rules_changed",
            "policy",
            principal.tenant.clone(),
            serde_json::json!({ "rule_id": rule_id }),
        );
        let key = principal.tenant.as_str();
        if let Err(e) = self
            .events
            .publish(topics::CONSTITUTION_UPDATED, key, &event)
            .await
        {
            tracing::error!(error = %e, "a policy rule change event was not published");
        }
        AuditRecord::by("policy", "policy.rule_changed", principal)
            .on("policy_rule", Some(rule_id))
            .action(action)
            .publish(&self.events)
            .await;
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyGrpc {
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::PolicyRead)?;
        let token = self.constitution_token(&principal, &request).await?;
        let r = request.into_inner();
        let question = Question {
            action: r.action,
            text: r.text,
            tool: r.tool,
            session_id: r.session_id,
        };
        let d = self.decider.decide(&principal, &token, &question).await?;
        Ok(Response::new(pb::Decision {
            allowed: d.allowed,
            score: d.score,
            severity: d
                .severity
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            reasons: d.reasons,
            rule_ids: d.rule_ids,
            constitution_hash: d.constitution_hash,
            flagged: d.flagged,
        }))
    }

    async fn get_output_guard(
        &self,
        request: Request<pb::GetOutputGuardRequest>,
    ) -> Result<Response<pb::OutputGuard>, Status> {
        let principal = caller(&request)?;
        // Whoever may use a model may know what its answers may not say.
        if !principal.can(Capability::ModelsUse) {
            principal.require(Capability::PolicyRead)?;
        }
        let token = self.constitution_token(&principal, &request).await?;
        let compiled = self
            .decider
            .compiled(&principal.tenant, &token)
            .await
            .map_err(|e| {
                ApiError::unavailable("the tenant's output policy cannot be loaded right now", e)
            })?;
        let guard = &compiled.output_guard;
        Ok(Response::new(pb::OutputGuard {
            term_ids: guard.terms.iter().map(|(id, _)| id.clone()).collect(),
            terms: guard.terms.iter().map(|(_, t)| t.clone()).collect(),
            pattern_ids: guard.patterns.iter().map(|(id, _)| id.clone()).collect(),
            patterns: guard.patterns.iter().map(|(_, p)| p.clone()).collect(),
            constitution_hash: compiled.constitution_hash.clone(),
        }))
    }

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::PolicyRead)?;
        let rules = self
            .decider
            .rules()
            .list(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::ListRulesResponse {
            rules: rules.into_iter().map(rule_message).collect(),
        }))
    }

    async fn get_rule(
        &self,
        request: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::Rule>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::PolicyRead)?;
        let rule = self
            .decider
            .rules()
            .get(&principal.tenant, &request.get_ref().id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("policy rule"))?;
        Ok(Response::new(rule_message(rule)))
    }

    async fn create_rule(&self, request: Request<pb::Rule>) -> Result<Response<pb::Rule>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::PolicyWrite)?;
        let rule = rule_of(uuid::Uuid::now_v7().to_string(), request.into_inner())?;
        self.decider
            .rules()
            .save(&principal.tenant, &rule, false)
            .await
            .map_err(ApiError::internal)?;
        self.changed(&principal, &rule.id, "create").await;
        Ok(Response::new(rule_message(rule)))
    }

    async fn update_rule(&self, request: Request<pb::Rule>) -> Result<Response<pb::Rule>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::PolicyWrite)?;
        let r = request.into_inner();
        let rule = rule_of(r.id.clone(), r)?;
        if !self
            .decider
            .rules()
            .save(&principal.tenant, &rule, true)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found("policy rule").into());
        }
        self.changed(&principal, &rule.id, "update").await;
        Ok(Response::new(rule_message(rule)))
    }

    async fn delete_rule(
        &self,
        request: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::PolicyWrite)?;
        let id = &request.get_ref().id;
        if !self
            .decider
            .rules()
            .delete(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found("policy rule").into());
        }
        self.changed(&principal, id, "delete").await;
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }
}
