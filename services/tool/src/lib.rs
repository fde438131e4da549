//! The tool service: tool adapters, invocation under policy, credentials and MCP.
//!
//! Layout: `build` wires the service from its context (database with this service's
//! migrations, the shared backends, its routes); `main.rs` is the thin binary
//! `somagent-tool`. `domain/` holds what a tool is (manifests, OpenAPI tools, argument
//! checks, the HTTP request of a call); its routes are not served yet, so until they
//! are it serves its health, readiness and metrics, and nothing else.

pub mod domain;

use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::infra::db::Migration;

pub use somagent_common::service::TOOL as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = &[];

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    Ok(ServiceBuilder::new(ctx, MIGRATIONS).await?.build())
}
