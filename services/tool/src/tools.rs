//! The tenant's tool registry: the tools a caller may use, the ones a tenant defines
//! from OpenAPI documents, and their credentials, which are sealed before they are
//! stored and never returned, logged or put in an event.

use std::sync::Arc;
use std::time::Duration;

use somagent_common::audit::AuditRecord;
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::events::topics;
use somagent_common::infra::outbox::Outbox;
use somagent_common::secrets::Sealer;
use somagent_common::tenant::TenantId;

use crate::adapters;
use crate::domain::manifest::ToolManifest;
use crate::domain::openapi::{self, ToolDefaults};
use crate::store::{StoredTool, ToolStore};

/// The kind of a built-in adapter.
pub const BUILTIN: &str = "builtin";

/// The largest OpenAPI document a tenant may define a tool with.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// The longest credential a tool may have.
pub const MAX_CREDENTIAL: usize = 16 * 1024;

/// A tool as a caller sees it: whether a credential is set, never the credential.
#[derive(Debug, Clone)]
pub struct ToolView {
    pub tool: StoredTool,
    pub credential_set: bool,
}

/// What a tenant asks for when it defines a tool from an OpenAPI document.
#[derive(Debug, Clone)]
pub struct NewHttpTool {
    pub id: String,
    pub openapi_json: String,
    pub base_url: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub timeout: Option<Duration>,
    pub price_micros: i64,
    pub requires_approval: bool,
}

#[derive(Clone)]
pub struct Registry {
    pub store: ToolStore,
    pub sealer: Arc<Sealer>,
    pub outbox: Outbox,
}

/// What binds a sealed credential to its row: it opens for this tenant's tool only.
pub fn credential_binding(tenant: &TenantId, tool: &str) -> String {
    format!("tool credential\0{tenant}\0{tool}")
}

impl Registry {
    /// The tools the caller may use, each with its actions the caller may call, those
    /// `keep` says yes to (given a tool's manifest and whether its credential and its
    /// site are set). A session turn keeps only what is ready to call, before any
    /// built-in adapter is copied: every turn lists the tools.
    pub async fn list(
        &self,
        principal: &Principal,
        keep: impl Fn(&ToolManifest, bool, bool) -> bool,
    ) -> Result<Vec<ToolView>, ApiError> {
        principal.require(Capability::ToolsRead)?;
        let tenant = &principal.tenant;
        let (stored, sites, with_credentials) = tokio::try_join!(
            self.store.list(tenant),
            self.store.sites(tenant),
            self.store.has_credentials(tenant),
        )
        .map_err(ApiError::internal)?;
        let site_of = |id: &str| {
            sites
                .iter()
                .find(|(tool, _)| tool == id)
                .map(|(_, url)| url)
        };
        let credential_set = |id: &str| with_credentials.iter().any(|tool| tool == id);
        let mut tools: Vec<StoredTool> = adapters::all()
            .iter()
            .filter(|m| keep(m, credential_set(&m.id), site_of(&m.id).is_some()))
            .map(builtin)
            .chain(stored.into_iter().filter(|t| {
                keep(
                    &t.manifest,
                    credential_set(&t.manifest.id),
                    site_of(&t.manifest.id).is_some(),
                )
            }))
            .collect();
        tools.sort_by(|a, b| a.manifest.id.cmp(&b.manifest.id));
        for tool in &mut tools {
            if let Some(url) = site_of(&tool.manifest.id) {
                tool.manifest.base_url = url.clone();
                tool.site_set = true;
            }
        }
        Ok(tools
            .into_iter()
            // What the caller may use: an action whose capability they lack is left out.
            .filter_map(|mut tool| {
                tool.manifest
                    .actions
                    .retain(|a| Capability::parse(&a.capability).is_some_and(|c| principal.can(c)));
                (!tool.manifest.actions.is_empty()).then(|| ToolView {
                    credential_set: credential_set(&tool.manifest.id),
                    tool,
                })
            })
            .collect())
    }

    pub async fn get(&self, principal: &Principal, id: &str) -> Result<ToolView, ApiError> {
        principal.require(Capability::ToolsRead)?;
        let tool = self.find(&principal.tenant, id).await?;
        let credential_set = self
            .store
            .credential(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
            .is_some();
        Ok(ToolView {
            tool,
            credential_set,
        })
    }

    /// A built-in adapter or the tenant's own tool, served where the tenant said; or
    /// "not found" (another tenant's tool is not found either).
    pub async fn find(&self, tenant: &TenantId, id: &str) -> Result<StoredTool, ApiError> {
        let mut tool = match adapters::find(id) {
            Some(manifest) => builtin(manifest),
            None => self
                .store
                .get(tenant, id)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::not_found("tool"))?,
        };
        if let Some(url) = self
            .store
            .site(tenant, id)
            .await
            .map_err(ApiError::internal)?
        {
            tool.manifest.base_url = url;
            tool.site_set = true;
        }
        Ok(tool)
    }

    /// A tenant's tool from an OpenAPI document.
    pub async fn create(
        &self,
        principal: &Principal,
        asked: NewHttpTool,
    ) -> Result<ToolView, ApiError> {
        principal.require(Capability::ToolsWrite)?;
        check_new_id(&asked.id)?;
        if asked.openapi_json.len() > MAX_DOCUMENT {
            return Err(ApiError::validation("openapi", "is at most 1 MiB"));
        }
        let document: serde_json::Value = serde_json::from_str(&asked.openapi_json)
            .map_err(|e| ApiError::validation("openapi", format!("is not JSON: {e}")))?;
        let defaults = ToolDefaults {
            id: asked.id,
            base_url: asked.base_url,
            rate_limit_per_minute: asked.rate_limit_per_minute.unwrap_or(60),
            timeout: asked.timeout.unwrap_or(Duration::from_secs(30)),
            price_micros: asked.price_micros,
            requires_approval: asked.requires_approval,
        };
        let manifest = openapi::manifest_from(&document, &defaults).map_err(|e| {
            let field = if e.field == "id" || e.field == "base_url" {
                e.field.clone()
            } else {
                format!("openapi.{}", e.field)
            };
            ApiError::validation(&field, e.message)
        })?;
        self.add(principal, "http", manifest).await
    }

    /// Stores a new tool of the tenant's; 409 if it has one of that id.
    pub async fn add(
        &self,
        principal: &Principal,
        kind: &str,
        manifest: crate::domain::manifest::ToolManifest,
    ) -> Result<ToolView, ApiError> {
        let tool = StoredTool {
            kind: kind.into(),
            manifest,
            created_at: unix_now(),
            site_set: false,
        };
        let created = self
            .store
            .create(&principal.tenant, &tool, &principal.subject)
            .await
            .map_err(ApiError::internal)?;
        if !created {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the tenant already has a tool with this id",
            ));
        }
        self.audit(principal, "tool.created", &tool.manifest.id)
            .await;
        Ok(ToolView {
            tool,
            credential_set: false,
        })
    }

    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        principal.require(Capability::ToolsWrite)?;
        if adapters::find(id).is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "`{id}` is a built-in tool: DELETE /v1/tools/{id}/credentials to stop using it"
                ),
            ));
        }
        if !self
            .store
            .delete(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found("tool"));
        }
        self.audit(principal, "tool.deleted", id).await;
        Ok(())
    }

    /// Sets the tenant's credential for a tool, where its instance is served, or both.
    pub async fn put_credential(
        &self,
        principal: &Principal,
        id: &str,
        credential: &str,
        base_url: &str,
    ) -> Result<bool, ApiError> {
        principal.require(Capability::ToolsWrite)?;
        if credential.is_empty() && base_url.is_empty() {
            return Err(ApiError::validation(
                "credential",
                "is set, or base_url is, or both",
            ));
        }
        if credential.len() > MAX_CREDENTIAL {
            return Err(ApiError::validation("credential", "is 1-16384 characters"));
        }
        let tool = self.find(&principal.tenant, id).await?;
        if !base_url.is_empty() {
            let url = url::Url::parse(base_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
                .ok_or_else(|| ApiError::validation("base_url", "is an http or https URL"))?;
            self.store
                .put_site(
                    &principal.tenant,
                    id,
                    url.as_str().trim_end_matches('/'),
                    unix_now(),
                )
                .await
                .map_err(ApiError::internal)?;
            self.audit(principal, "tool.site_set", id).await;
        }
        if credential.is_empty() {
            let stored = self
                .store
                .credential(&principal.tenant, id)
                .await
                .map_err(ApiError::internal)?;
            return Ok(stored.is_some());
        }
        if !tool.manifest.auth.needs_credential() {
            return Err(ApiError::validation(
                "credential",
                "this tool authenticates with nothing: it takes no credential",
            ));
        }
        // A cloud credential is a document: its faults are told now, not at the first call.
        crate::domain::credentials::Credential::read(&tool.manifest.auth, credential)
            .map_err(|e| ApiError::validation(&e.field, e.message))?;
        let sealed = self.sealer.seal(
            credential.as_bytes(),
            &credential_binding(&principal.tenant, id),
        );
        self.store
            .put_credential(&principal.tenant, id, &sealed, unix_now())
            .await
            .map_err(ApiError::internal)?;
        self.audit(principal, "tool.credential_set", id).await;
        Ok(true)
    }

    pub async fn delete_credential(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        principal.require(Capability::ToolsWrite)?;
        self.find(&principal.tenant, id).await?;
        if self
            .store
            .delete_credential(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
        {
            self.audit(principal, "tool.credential_deleted", id).await;
        }
        Ok(())
    }

    async fn audit(&self, principal: &Principal, kind: &str, id: &str) {
        let record = AuditRecord::by("tool", kind, principal).on("tool", Some(id));
        if let Err(e) = self
            .outbox
            .publish(topics::AUDIT, principal.tenant.as_str(), &record.envelope())
            .await
        {
            tracing::error!(error = %e, kind, "an audit record could not be stored");
        }
    }
}

/// A built-in adapter as a tenant's registry holds it.
fn builtin(manifest: &ToolManifest) -> StoredTool {
    StoredTool {
        kind: BUILTIN.into(),
        manifest: manifest.clone(),
        created_at: 0,
        site_set: false,
    }
}

/// An id a tenant may give a new tool: a slug that is neither the call log's route nor
/// a built-in adapter's.
pub fn check_new_id(id: &str) -> Result<(), ApiError> {
    // `GET /v1/tools/invocations` is the call log: no tool may take its name.
    if id == "invocations" {
        return Err(ApiError::validation("id", "`invocations` is reserved"));
    }
    if adapters::find(id).is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("`{id}` is a built-in tool"),
        ));
    }
    if !crate::domain::manifest::is_slug(id) {
        return Err(ApiError::validation(
            "id",
            "must be 2-63 lowercase letters, digits or -, starting with a letter or digit",
        ));
    }
    Ok(())
}
