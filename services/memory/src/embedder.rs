//! Texts into vectors through slm, as the user they are for: slm meters the call to
//! them, and their tenant's embedding profile answers. Memory asks slm with a service
//! token of its own for that user, carrying no more than the user holds of
//! `models:use` and `memory:read` (slm lets memory embed for a user who may read
//! memory, so a viewer can search what they may read).

use somagent_common::auth::{Capability, Principal, ServiceTokens};
use somagent_common::error::ApiError;
use somagent_common::proto::slm::v1 as pb;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::service::SLM;
use somagent_common::tenant::TenantId;

use crate::vectors::Collection;

/// Texts per call to slm: big enough to batch well on the local model, small enough
/// to keep a call's body and time bounded.
pub const BATCH: usize = 64;

/// Who the texts are embedded for.
#[derive(Debug, Clone)]
pub struct ForUser {
    pub tenant: TenantId,
    pub subject: String,
    /// The capabilities the user holds (of those memory asks slm for).
    pub capabilities: Vec<String>,
}

impl ForUser {
    pub fn of(principal: &Principal) -> Self {
        Self {
            tenant: principal.tenant.clone(),
            subject: principal.subject.clone(),
            capabilities: [
                Capability::ModelsUse,
                Capability::ModelsRead,
                Capability::MemoryRead,
            ]
            .into_iter()
            .filter(|c| principal.capabilities.contains(c))
            .map(|c| c.as_str().to_owned())
            .collect(),
        }
    }
}

#[derive(Clone)]
pub struct Embedder {
    slm: SlmServiceClient<somagent_common::grpc_channel::Channel>,
    tokens: std::sync::Arc<ServiceTokens>,
    /// The profile memory embeds with (`embeddings` unless configured).
    profile: String,
}

impl Embedder {
    pub fn new(
        slm: SlmServiceClient<somagent_common::grpc_channel::Channel>,
        tokens: ServiceTokens,
        profile: String,
    ) -> Self {
        Self {
            slm,
            tokens: std::sync::Arc::new(tokens),
            profile,
        }
    }

    /// The collection the profile's vectors belong in now, without embedding anything
    /// (for a search by a vector the caller brings).
    pub async fn collection(&self, user: &ForUser) -> Result<Collection, ApiError> {
        let token = self
            .tokens
            .for_user(&SLM, &user.tenant, &user.subject, &user.capabilities)
            .await
            .map_err(ApiError::from)?;
        let models = self
            .slm
            .clone()
            .list_models(somagent_common::auth::grpc::with_bearer(
                &token,
                tonic::Request::new(pb::ListModelsRequest {}),
            ))
            .await
            .map_err(ApiError::from)?
            .into_inner()
            .models;
        models
            .into_iter()
            .find(|m| m.id == self.profile && m.dimensions > 0)
            .map(|m| Collection {
                model: m.model,
                dimensions: m.dimensions,
            })
            .ok_or_else(|| {
                ApiError::unavailable(
                    format!("no embedding model is configured as `{}`", self.profile),
                    anyhow::anyhow!("embedding profile missing"),
                )
            })
    }

    /// One vector per text, in order, and the collection they belong in.
    pub async fn embed(
        &self,
        user: &ForUser,
        texts: Vec<String>,
    ) -> Result<(Collection, Vec<Vec<f32>>), ApiError> {
        let token = self
            .tokens
            .for_user(&SLM, &user.tenant, &user.subject, &user.capabilities)
            .await
            .map_err(ApiError::from)?;
        let mut collection = None;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let batch: Vec<String> = texts.by_ref().take(BATCH).collect();
            let answer = self
                .slm
                .clone()
                .embed(somagent_common::auth::grpc::with_bearer(
                    &token,
                    tonic::Request::new(pb::EmbedRequest {
                        model: self.profile.clone(),
                        input: batch,
                        dimensions: None,
                        session_id: String::new(),
                    }),
                ))
                .await
                .map_err(ApiError::from)?
                .into_inner();
            let this = Collection {
                model: answer.model.clone(),
                dimensions: answer.dimensions,
            };
            // The profile may be changed between two batches: never mix two models.
            if collection.as_ref().is_some_and(|c: &Collection| *c != this) {
                return Err(ApiError::unavailable(
                    "the embedding model changed while a text was embedded; try again",
                    anyhow::anyhow!("embedding model changed mid-call"),
                ));
            }
            collection = Some(this);
            vectors.extend(answer.data.into_iter().map(|v| v.values));
        }
        let collection = collection.ok_or_else(|| ApiError::validation("text", "is empty"))?;
        Ok((collection, vectors))
    }
}
