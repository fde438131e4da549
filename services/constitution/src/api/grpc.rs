//! constitution's gRPC surface. Reads verify the stored signature every time and refuse
//! a constitution that fails (the policy service then denies: fail closed).

use std::sync::Arc;

use somagent_common::audit::AuditRecord;
use somagent_common::auth::Capability;
use somagent_common::auth::grpc::caller;
use somagent_common::clock::rfc3339;
use somagent_common::constitution::{Constitution, PII_PATTERNS};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::constitution::v1 as pb;
use somagent_common::proto::constitution::v1::constitution_service_server::ConstitutionService;
use somagent_common::tenant::TenantId;
use tonic::{Request, Response, Status};

use crate::domain::signing::{Signer, hash};
use crate::store::{ConstitutionStore, StoredVersion};

pub struct ConstitutionGrpc {
    pub store: ConstitutionStore,
    pub signer: Arc<Signer>,
    pub outbox: Outbox,
}

impl ConstitutionGrpc {
    /// The platform's default, as version 0 of `tenant`, signed for it.
    fn default_for(&self, tenant: &TenantId) -> StoredVersion {
        let document = Constitution::default_document().canonical_json();
        let hash = hash(&document);
        StoredVersion {
            version: 0,
            signature: self.signer.sign(tenant, 0, &hash),
            key_id: self.signer.key_id().to_owned(),
            document,
            hash,
            published_at: 0,
        }
    }

    fn message(&self, tenant: &TenantId, v: StoredVersion) -> Result<pb::Constitution, ApiError> {
        if !self
            .signer
            .verify(tenant, v.version, &v.document, &v.hash, &v.signature)
        {
            tracing::error!(
                tenant = tenant.as_str(),
                version = v.version,
                "a stored constitution failed verification"
            );
            return Err(ApiError::internal(anyhow::anyhow!(
                "constitution {} of tenant {tenant} failed signature verification",
                v.version
            )));
        }
        Ok(pb::Constitution {
            tenant: tenant.as_str().to_owned(),
            version: v.version,
            document_json: v.document,
            hash: v.hash,
            signature: v.signature,
            key_id: v.key_id,
            published_at: rfc3339(v.published_at),
            public_key: self.signer.public_key(),
        })
    }
}

/// The document as published: known fields only, sound rules, patterns that compile.
fn parse(document_json: &str) -> Result<Constitution, ApiError> {
    let doc: Constitution = serde_json::from_str(document_json)
        .map_err(|e| ApiError::validation("document", format!("is not a constitution: {e}")))?;
    doc.validate()
        .map_err(|e| ApiError::validation("document", e))?;
    for m in &doc.forbidden_patterns {
        regex::Regex::new(&m.value).map_err(|e| {
            ApiError::validation(
                "document",
                format!("pattern `{}` does not compile: {e}", m.id),
            )
        })?;
    }
    debug_assert!(
        PII_PATTERNS
            .iter()
            .all(|(_, p)| regex::Regex::new(p).is_ok())
    );
    Ok(doc)
}

#[tonic::async_trait]
impl ConstitutionService for ConstitutionGrpc {
    async fn get_current(
        &self,
        request: Request<pb::GetCurrentRequest>,
    ) -> Result<Response<pb::Constitution>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::ConstitutionRead)?;
        let tenant = &principal.tenant;
        let current = match self
            .store
            .latest(tenant)
            .await
            .map_err(ApiError::internal)?
        {
            Some(v) => v,
            None => self.default_for(tenant),
        };
        Ok(Response::new(self.message(tenant, current)?))
    }

    async fn get_version(
        &self,
        request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::Constitution>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::ConstitutionRead)?;
        let tenant = &principal.tenant;
        let version = request.get_ref().version;
        let found = if version == 0 {
            self.default_for(tenant)
        } else {
            self.store
                .version(tenant, version)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found("constitution version"))?
        };
        Ok(Response::new(self.message(tenant, found)?))
    }

    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::Constitution>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::ConstitutionWrite)?;
        let tenant = &principal.tenant;
        let document = parse(&request.get_ref().document_json)?.canonical_json();
        let hash = hash(&document);
        // Two publishers at once: one gets the next version, the other the one after.
        for _ in 0..5 {
            let next = self
                .store
                .latest(tenant)
                .await
                .map_err(ApiError::internal)?
                .map_or(1, |v| v.version + 1);
            let version = StoredVersion {
                version: next,
                signature: self.signer.sign(tenant, next, &hash),
                key_id: self.signer.key_id().to_owned(),
                document: document.clone(),
                hash: hash.clone(),
                published_at: somagent_common::clock::unix_now(),
            };
            if !self
                .store
                .insert(tenant, &version, &principal.subject)
                .await
                .map_err(ApiError::internal)?
            {
                continue;
            }
            let updated = Envelope::new(
                "constitution.updated",
                "constitution",
                principal.tenant.clone(),
                serde_json::json!({ "version": next, "hash": hash }),
            )
            .with_subject(principal.subject.clone());
            let published = AuditRecord::by("constitution", "constitution.published", &principal)
                .on("constitution", Some(&next.to_string()))
                .action("publish")
                .with("hash", &hash)
                .envelope();
            for (topic, event) in [
                (topics::CONSTITUTION_UPDATED, updated),
                (topics::AUDIT, published),
            ] {
                self.outbox
                    .publish(topic, tenant.as_str(), &event)
                    .await
                    .map_err(ApiError::internal)?;
            }
            tracing::info!(tenant = tenant.as_str(), version = next, %hash, "constitution published");
            return Ok(Response::new(self.message(tenant, version)?));
        }
        Err(ApiError::new(
            ErrorCode::Conflict,
            "the constitution is being published by someone else; try again",
        )
        .into())
    }
}
