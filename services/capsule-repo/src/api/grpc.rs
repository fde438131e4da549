//! The capsule repository's gRPC surface. Bodies are JSON in the public API's shapes;
//! every call verifies the token it carries and acts in the caller's tenant only.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use somagent_common::audit::AuditRecord;
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::capsule::{
    Definition, MAX_DEFINITION_BYTES, attestation, canonical_json, decode_b64url, verify_signature,
    version_key,
};
use somagent_common::clock::{rfc3339_ms, unix_now_ms};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::events::topics;
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::capsule::v1 as pb;
use somagent_common::proto::capsule::v1::capsule_service_server::CapsuleService;
use tonic::{Request, Response, Status};

use crate::domain::{access, attest};
use crate::store::{CapsuleStore, Installation, KeyRow, PLATFORM, Package, Standing, Use};

pub struct CapsuleGrpc {
    pub store: CapsuleStore,
    pub outbox: Outbox,
    /// The platform key's id and raw public key (base64url).
    pub platform_key: Arc<(String, String)>,
}

type Answer = Result<Response<pb::Body>, Status>;

fn body(value: Value) -> Answer {
    Ok(Response::new(pb::Body {
        json: value.to_string(),
    }))
}

fn read<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, ApiError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json)
        .map_err(|e| ApiError::bad_request(format!("the body does not read: {e}")))
}

fn publisher(p: &str) -> Value {
    if p == PLATFORM {
        json!({ "publisher": "platform", "official": true })
    } else {
        json!({ "publisher": p, "official": false })
    }
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn key_view(k: &KeyRow) -> Value {
    json!({
        "id": k.id, "name": k.name, "public_key": k.public_key, "created_by": k.created_by,
        "created_at": rfc3339_ms(k.created_at), "revoked_at": k.revoked_at.map(rfc3339_ms),
    })
}

fn submission_view(p: &Package) -> Value {
    let definition: Value = serde_json::from_str(&p.definition).unwrap_or(Value::Null);
    let review = p.reviewed_at.map(|at| {
        json!({"reviewer": p.reviewer, "reviewed_at": rfc3339_ms(at), "notes": p.review_notes})
    });
    merge(
        json!({
            "id": p.id, "capsule_id": p.capsule_id, "version": p.version, "kind": p.kind,
            "name": p.name, "status": p.status, "visibility": p.visibility,
            "submitted_by": p.submitted_by, "attestation_hash": p.attestation_hash,
            "signature": p.signature, "key_id": p.key_id, "notes": p.notes, "review": review,
            "created_at": rfc3339_ms(p.created_at), "definition": definition,
        }),
        publisher(&p.publisher),
    )
}

fn installation_view(i: &Installation) -> Value {
    json!({
        "capsule_id": i.capsule_id, "environment": i.environment, "version": i.version,
        "previous_version": i.previous_version, "installed_by": i.installed_by,
        "installed_at": rfc3339_ms(i.installed_at), "notes": i.notes,
    })
}

fn standing_view(s: Standing) -> Value {
    let average = if s.ratings > 0 {
        (s.stars_total as f64 / s.ratings as f64 * 100.0).round() / 100.0
    } else {
        0.0
    };
    json!({
        "downloads": s.downloads, "runs": s.runs,
        "rating": { "average": average, "count": s.ratings },
    })
}

/// A capsule in the catalog: its latest approved version, standing and the tenant's
/// installations.
fn entry_view(latest: &Package, standing: Standing, installed: &[&Installation]) -> Value {
    merge(
        merge(
            json!({
                "id": latest.capsule_id, "name": latest.name, "kind": latest.kind,
                "summary": latest.summary, "category": latest.category, "tags": latest.tags,
                "version": latest.version, "visibility": latest.visibility,
                "installed": installed.iter().map(|i| json!({"environment": i.environment, "version": i.version})).collect::<Vec<_>>(),
            }),
            publisher(&latest.publisher),
        ),
        standing_view(standing),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    definition: Value,
    attestation_hash: String,
    signature: String,
    key_id: String,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    decision: String,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateBody {
    stars: u32,
    #[serde(default)]
    comment: Option<String>,
}

impl CapsuleGrpc {
    async fn audit(&self, record: AuditRecord) {
        let envelope = record.envelope();
        if let Err(e) = self
            .outbox
            .publish(topics::AUDIT, record.tenant().as_str(), &envelope)
            .await
        {
            tracing::warn!(error = %e, "a capsule audit record was not queued");
        }
    }

    /// Why `package` may not be installed or run, as a conflict, if it may not.
    async fn verified(&self, package: &Package) -> Result<(), ApiError> {
        let key = if package.publisher == PLATFORM {
            None
        } else {
            self.store
                .key(&package.key_id)
                .await
                .map_err(ApiError::internal)?
        };
        let (kid, public) = &*self.platform_key;
        attest::check(package, key.as_ref(), (kid, public)).map_err(|why| {
            tracing::warn!(capsule = %package.capsule_id, version = %package.version, why, "a capsule failed verification");
            ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "capsule {}@{} fails verification: {why}; it will not be installed or run",
                    package.capsule_id, package.version
                ),
            )
        })
    }

    /// The approved versions of `capsule` the caller's tenant sees, newest first; not
    /// found when there is none.
    async fn approved_versions(
        &self,
        principal: &Principal,
        capsule: &str,
    ) -> Result<Vec<Package>, ApiError> {
        let versions = self
            .store
            .approved(&principal.tenant, Some(capsule))
            .await
            .map_err(ApiError::internal)?;
        if versions.is_empty() {
            return Err(ApiError::not_found("capsule"));
        }
        Ok(versions)
    }

    /// A version the caller sees: the one named, or the latest approved.
    async fn pick(
        &self,
        principal: &Principal,
        capsule: &str,
        version: Option<&str>,
    ) -> Result<Package, ApiError> {
        let versions = self.approved_versions(principal, capsule).await?;
        match version.filter(|v| !v.is_empty()) {
            None => versions
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found("capsule")),
            Some(v) => versions
                .into_iter()
                .find(|p| p.version == v)
                .ok_or_else(|| ApiError::not_found("capsule version")),
        }
    }

    /// The version a run of `capsule` uses in `environment`: the tenant's
    /// installation, else the platform's own latest.
    async fn for_run(
        &self,
        principal: &Principal,
        capsule: &str,
        environment: &str,
    ) -> Result<Package, ApiError> {
        let installed = self
            .store
            .installation(&principal.tenant, capsule, environment)
            .await
            .map_err(ApiError::internal)?;
        let package = match installed {
            Some(i) => self
                .store
                .version(capsule, &i.version)
                .await
                .map_err(ApiError::internal)?
                .filter(|p| p.status == "approved" && access::sees(principal, p)),
            None => self
                .store
                .approved(&principal.tenant, Some(capsule))
                .await
                .map_err(ApiError::internal)?
                .into_iter()
                .find(|p| p.publisher == PLATFORM),
        };
        package.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("capsule `{capsule}` is not installed in this tenant's `{environment}`"),
            )
        })
    }
}

fn definition_of(package: &Package) -> Result<Definition, ApiError> {
    serde_json::from_str::<Value>(&package.definition)
        .ok()
        .and_then(|v| Definition::parse(&v).ok())
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("a stored capsule definition does not read"))
        })
}

/// Checks that a schema compiles; the field names it.
fn check_schema(field: &str, schema: Option<&Value>) -> Result<(), ApiError> {
    if let Some(schema) = schema {
        jsonschema::validator_for(schema)
            .map_err(|e| ApiError::validation(field, format!("is not a valid JSON Schema: {e}")))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl CapsuleService for CapsuleGrpc {
    async fn add_key(&self, request: Request<pb::Body>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesWrite)?;
        let new: NewKey = read(&request.get_ref().json)?;
        if new.name.trim().is_empty() || new.name.len() > 100 {
            return Err(ApiError::validation("name", "is 1-100 characters").into());
        }
        let raw = decode_b64url(&new.public_key)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                ApiError::validation(
                    "public_key",
                    "is a raw Ed25519 public key (32 bytes), base64url",
                )
            })?;
        let key = KeyRow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: principal.tenant.to_string(),
            name: new.name.trim().to_owned(),
            public_key: data_encoding::BASE64URL_NOPAD.encode(&raw),
            created_by: principal.subject.clone(),
            created_at: unix_now_ms(),
            revoked_at: None,
        };
        self.store.add_key(&key).await.map_err(ApiError::internal)?;
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.key_added", &principal)
                .on("capsule_key", Some(&key.id))
                .action("create"),
        )
        .await;
        body(key_view(&key))
    }

    async fn list_keys(&self, request: Request<pb::Empty>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let keys = self
            .store
            .keys(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        body(json!({ "keys": keys.iter().map(key_view).collect::<Vec<_>>() }))
    }

    async fn revoke_key(&self, request: Request<pb::ById>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesWrite)?;
        let key = self
            .store
            .revoke_key(&principal.tenant, &request.get_ref().id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("key"))?;
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.key_revoked", &principal)
                .on("capsule_key", Some(&key.id))
                .action("revoke"),
        )
        .await;
        body(key_view(&key))
    }

    async fn submit(&self, request: Request<pb::Body>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesWrite)?;
        let submission: Submission = read(&request.get_ref().json)?;
        if !submission.definition.is_object() {
            return Err(ApiError::validation("definition", "is a JSON object").into());
        }
        let canonical = canonical_json(&submission.definition);
        if canonical.len() > MAX_DEFINITION_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                "a capsule definition is at most 256 KiB of canonical JSON",
            )
            .into());
        }
        let definition =
            Definition::parse(&submission.definition).map_err(|(field, message)| {
                ApiError::validation(&format!("definition.{field}"), message)
            })?;
        check_schema("definition.input_schema", definition.input_schema.as_ref())?;
        check_schema(
            "definition.output_schema",
            definition.output_schema.as_ref(),
        )?;
        let visibility = match submission.visibility.as_deref() {
            None | Some("private") => "private",
            Some("public") => "public",
            Some(_) => {
                return Err(ApiError::validation("visibility", "is `private` or `public`").into());
            }
        };
        let hash = attestation(&canonical);
        if !hash.eq_ignore_ascii_case(submission.attestation_hash.trim()) {
            return Err(ApiError::bad_request(
                "attestation_hash is not the SHA-256 of the definition's canonical JSON (keys sorted, no whitespace)",
            )
            .with_details(json!({ "computed": hash }))
            .into());
        }
        let key = self
            .store
            .key(&submission.key_id)
            .await
            .map_err(ApiError::internal)?
            .filter(|k| k.tenant == principal.tenant.as_str() && k.revoked_at.is_none())
            .ok_or_else(|| {
                ApiError::bad_request("key_id is not an active publisher key of this tenant")
            })?;
        if !verify_signature(
            &key.public_key,
            &definition.id,
            &definition.version,
            &hash,
            &submission.signature,
        ) {
            return Err(ApiError::bad_request(
                "signature is not the key's Ed25519 signature of `somagent-capsule:v1\\n<id>\\n<version>\\n<attestation_hash>`",
            )
            .into());
        }
        let notes = submission.notes.unwrap_or_default();
        if notes.len() > 4000 {
            return Err(ApiError::validation("notes", "is at most 4000 characters").into());
        }
        let package = Package {
            id: uuid::Uuid::now_v7().to_string(),
            capsule_id: definition.id.clone(),
            version_key: version_key(&definition.version).unwrap_or_default(),
            version: definition.version.clone(),
            publisher: principal.tenant.to_string(),
            submitted_by: principal.subject.clone(),
            visibility: visibility.into(),
            status: "pending".into(),
            kind: definition.kind.as_str().into(),
            name: definition.name,
            summary: definition.summary,
            category: definition.category,
            tags: definition.tags,
            definition: canonical,
            attestation_hash: hash,
            signature: submission.signature.trim().to_owned(),
            key_id: key.id,
            notes,
            reviewer: None,
            reviewed_at: None,
            review_notes: None,
            created_at: unix_now_ms(),
        };
        self.store.submit(&package).await?;
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.submitted", &principal)
                .on("capsule", Some(&package.capsule_id))
                .action("submit")
                .with("version", &package.version)
                .with("hash", &package.attestation_hash),
        )
        .await;
        body(submission_view(&package))
    }

    async fn list_submissions(&self, request: Request<pb::ListSubmissionsRequest>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let status = match request.get_ref().status.as_str() {
            "" => None,
            s @ ("pending" | "approved" | "rejected") => Some(s),
            _ => {
                return Err(
                    ApiError::validation("status", "is pending, approved or rejected").into(),
                );
            }
        };
        let found = self
            .store
            .submissions(
                &principal.tenant,
                access::reviews_public(&principal),
                status,
            )
            .await
            .map_err(ApiError::internal)?;
        body(json!({ "submissions": found.iter().map(submission_view).collect::<Vec<_>>() }))
    }

    async fn get_submission(&self, request: Request<pb::ById>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let package = self
            .store
            .package(&request.get_ref().id)
            .await
            .map_err(ApiError::internal)?
            .filter(|p| access::sees(&principal, p))
            .ok_or_else(|| ApiError::not_found("submission"))?;
        body(submission_view(&package))
    }

    async fn review(&self, request: Request<pb::ReviewRequest>) -> Answer {
        let principal = caller(&request)?;
        let r = request.get_ref();
        let decision: ReviewBody = read(&r.json)?;
        let approve = match decision.decision.as_str() {
            "approve" => true,
            "reject" => false,
            _ => return Err(ApiError::validation("decision", "is `approve` or `reject`").into()),
        };
        let notes = decision.notes.unwrap_or_default();
        if !approve && notes.trim().is_empty() {
            return Err(ApiError::validation("notes", "say why a submission is rejected").into());
        }
        if notes.len() > 4000 {
            return Err(ApiError::validation("notes", "is at most 4000 characters").into());
        }
        let package = self
            .store
            .package(&r.id)
            .await
            .map_err(ApiError::internal)?
            .filter(|p| access::sees(&principal, p))
            .ok_or_else(|| ApiError::not_found("submission"))?;
        access::may_review(&principal, &package)?;
        if approve {
            // What is approved must still be what was signed, by a key still valid.
            self.verified(&package).await?;
        }
        let reviewed = self
            .store
            .review(
                &package.id,
                &principal.tenant,
                &principal.subject,
                approve,
                &notes,
            )
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Conflict,
                    format!("this submission was already {}", package.status),
                )
            })?;
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.reviewed", &principal)
                .on("capsule", Some(&reviewed.capsule_id))
                .action(if approve { "approve" } else { "reject" })
                .with("version", &reviewed.version)
                .with("publisher", &reviewed.publisher),
        )
        .await;
        body(submission_view(&reviewed))
    }

    async fn catalog(&self, request: Request<pb::CatalogRequest>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let filter = request.get_ref();
        let words: Vec<String> = filter
            .q
            .to_lowercase()
            .split_whitespace()
            .take(10)
            .map(str::to_owned)
            .collect();
        let versions = self
            .store
            .approved(&principal.tenant, None)
            .await
            .map_err(ApiError::internal)?;
        let standings = self.store.standings().await.map_err(ApiError::internal)?;
        let installations = self
            .store
            .installations(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::new();
        // Newest version first within each capsule: the first of each is its latest.
        for latest in versions
            .iter()
            .filter(|p| seen.insert(p.capsule_id.clone()))
        {
            let installed: Vec<&Installation> = installations
                .iter()
                .filter(|i| i.capsule_id == latest.capsule_id)
                .collect();
            let text = latest.search_text();
            let keep = words.iter().all(|w| text.contains(w.as_str()))
                && (filter.category.is_empty() || latest.category == filter.category)
                && (filter.tag.is_empty() || latest.tags.contains(&filter.tag))
                && (filter.kind.is_empty() || latest.kind == filter.kind)
                && (!filter.installed || !installed.is_empty());
            if keep {
                let standing = standings
                    .get(&latest.capsule_id)
                    .copied()
                    .unwrap_or_default();
                entries.push(entry_view(latest, standing, &installed));
            }
        }
        let mut categories: Vec<&str> = versions
            .iter()
            .map(|p| p.category.as_str())
            .filter(|c| !c.is_empty())
            .collect();
        categories.sort_unstable();
        categories.dedup();
        body(json!({ "capsules": entries, "categories": categories }))
    }

    async fn get_capsule(&self, request: Request<pb::ById>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let id = &request.get_ref().id;
        let versions = self.approved_versions(&principal, id).await?;
        let standing = self.store.standing(id).await.map_err(ApiError::internal)?;
        let installations = self
            .store
            .installations(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        let installed: Vec<&Installation> = installations
            .iter()
            .filter(|i| i.capsule_id == *id)
            .collect();
        let latest = &versions[0];
        let mut view = entry_view(latest, standing, &installed);
        view["definition"] = serde_json::from_str(&latest.definition).unwrap_or(Value::Null);
        view["installations"] = installed.iter().map(|i| installation_view(i)).collect();
        view["versions"] = versions
            .iter()
            .map(|p| {
                json!({"version": p.version, "submission_id": p.id,
                       "attestation_hash": p.attestation_hash, "created_at": rfc3339_ms(p.created_at)})
            })
            .collect();
        body(view)
    }

    async fn download(&self, request: Request<pb::ByVersion>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let r = request.get_ref();
        let package = self.pick(&principal, &r.id, Some(&r.version)).await?;
        let public_key = if package.publisher == PLATFORM {
            self.platform_key.1.clone()
        } else {
            self.store
                .key(&package.key_id)
                .await
                .map_err(ApiError::internal)?
                .map(|k| k.public_key)
                .unwrap_or_default()
        };
        self.store
            .count_use(&package.capsule_id, Use::Download)
            .await
            .map_err(ApiError::internal)?;
        let mut view = submission_view(&package);
        view["public_key"] = json!(public_key);
        body(view)
    }

    async fn install(&self, request: Request<pb::InstallRequest>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesWrite)?;
        let r = request.get_ref();
        let asked: InstallBody = read(&r.json)?;
        let environment = access::environment(asked.environment.as_deref().unwrap_or(""))?;
        let notes = asked.notes.unwrap_or_default();
        if notes.len() > 2000 {
            return Err(ApiError::validation("notes", "is at most 2000 characters").into());
        }
        let package = self
            .pick(&principal, &r.id, asked.version.as_deref())
            .await?;
        self.verified(&package).await?;
        let installed = self
            .store
            .install(
                &principal.tenant,
                &package.capsule_id,
                environment,
                &package.version,
                &principal.subject,
                &notes,
            )
            .await
            .map_err(ApiError::internal)?;
        self.store
            .count_use(&package.capsule_id, Use::Download)
            .await
            .map_err(ApiError::internal)?;
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.installed", &principal)
                .on("capsule", Some(&package.capsule_id))
                .action("install")
                .with("version", &package.version)
                .with("environment", environment),
        )
        .await;
        body(installation_view(&installed))
    }

    async fn list_installations(&self, request: Request<pb::Empty>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let installed = self
            .store
            .installations(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        body(
            json!({ "installations": installed.iter().map(installation_view).collect::<Vec<_>>() }),
        )
    }

    async fn rollback(&self, request: Request<pb::ByEnvironment>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesWrite)?;
        let r = request.get_ref();
        let environment = access::environment(&r.environment)?;
        let before = self
            .store
            .installation(&principal.tenant, &r.id, environment)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("installation"))?;
        let Some(previous) = before.previous_version.clone() else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "there is no previous version to roll back to",
            )
            .into());
        };
        // The version rolled back to must still verify.
        let package = self
            .store
            .version(&r.id, &previous)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("capsule version"))?;
        self.verified(&package).await?;
        let after = self
            .store
            .rollback(&principal.tenant, &r.id, environment, &principal.subject)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("installation"))?;
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.rolled_back", &principal)
                .on("capsule", Some(&r.id))
                .action("rollback")
                .with("from", &before.version)
                .with("to", &after.version)
                .with("environment", environment),
        )
        .await;
        body(installation_view(&after))
    }

    async fn uninstall(&self, request: Request<pb::ByEnvironment>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesWrite)?;
        let r = request.get_ref();
        let environment = access::environment(&r.environment)?;
        if !self
            .store
            .uninstall(&principal.tenant, &r.id, environment, &principal.subject)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found("installation").into());
        }
        self.audit(
            AuditRecord::by("capsule-repo", "capsule.uninstalled", &principal)
                .on("capsule", Some(&r.id))
                .action("uninstall")
                .with("environment", environment),
        )
        .await;
        body(json!({ "uninstalled": true, "capsule_id": r.id, "environment": environment }))
    }

    async fn rate(&self, request: Request<pb::RateRequest>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        if principal.actor.is_some() {
            return Err(ApiError::new(ErrorCode::Forbidden, "a rating is a person's own").into());
        }
        let r = request.get_ref();
        let rating: RateBody = read(&r.json)?;
        if !(1..=5).contains(&rating.stars) {
            return Err(ApiError::validation("stars", "is 1-5").into());
        }
        let comment = rating.comment.unwrap_or_default();
        if comment.len() > 2000 {
            return Err(ApiError::validation("comment", "is at most 2000 characters").into());
        }
        self.approved_versions(&principal, &r.id).await?;
        self.store
            .rate(
                &r.id,
                &principal.tenant,
                &principal.subject,
                rating.stars,
                &comment,
            )
            .await
            .map_err(ApiError::internal)?;
        let standing = self
            .store
            .standing(&r.id)
            .await
            .map_err(ApiError::internal)?;
        body(merge(
            json!({ "capsule_id": r.id, "stars": rating.stars, "comment": comment }),
            standing_view(standing),
        ))
    }

    async fn list_ratings(&self, request: Request<pb::ById>) -> Answer {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let id = &request.get_ref().id;
        self.approved_versions(&principal, id).await?;
        let ratings = self
            .store
            .ratings(id, &principal.tenant, &principal.subject)
            .await
            .map_err(ApiError::internal)?;
        body(json!({
            "ratings": ratings.iter().map(|r| json!({
                "stars": r.stars, "comment": r.comment, "updated_at": rfc3339_ms(r.updated_at), "mine": r.mine,
            })).collect::<Vec<_>>()
        }))
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::Resolved>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::CapsulesRead)?;
        let r = request.get_ref();
        let environment = access::environment(&r.environment)?;
        let package = self.for_run(&principal, &r.id, environment).await?;
        self.verified(&package).await?;
        let definition = definition_of(&package)?;
        let prompt = if r.input_json.is_empty() {
            String::new()
        } else {
            let input: Value = serde_json::from_str(&r.input_json)
                .map_err(|e| ApiError::validation("input", format!("is not JSON: {e}")))?;
            if let Some(schema) = &definition.input_schema {
                let validator = jsonschema::validator_for(schema).map_err(ApiError::internal)?;
                let problems: Vec<String> = validator
                    .iter_errors(&input)
                    .take(10)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .collect();
                if !problems.is_empty() {
                    return Err(ApiError::validation(
                        "input",
                        format!(
                            "does not match the capsule's input schema: {}",
                            problems.join("; ")
                        ),
                    )
                    .into());
                }
            }
            definition.render(&input)
        };
        if r.count_run {
            self.store
                .count_use(&package.capsule_id, Use::Run)
                .await
                .map_err(ApiError::internal)?;
        }
        Ok(Response::new(pb::Resolved {
            definition_json: package.definition.clone(),
            version: package.version.clone(),
            attestation_hash: package.attestation_hash.clone(),
            publisher: if package.publisher == PLATFORM {
                "platform".into()
            } else {
                package.publisher.clone()
            },
            prompt,
        }))
    }
}
