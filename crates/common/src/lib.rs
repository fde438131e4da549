//! The shared foundation of every SomaAgent service.
//!
//! Layout:
//! - [`config`]: layered configuration (defaults ← TOML ← `SOMAGENT_*` env ← `*_FILE`
//!   secrets) with typed backend URLs.
//! - [`service`]: the one table of services, ports and the backends each needs.
//! - [`app`]: a service as a value (`ServiceBuilder` → `ServiceApp::run`) and the
//!   `main` of every service binary.
//! - [`server`]: one port serving HTTP, gRPC, `/healthz`, `/readyz`, `/metrics`.
//! - [`error`]: the JSON problem / gRPC status every API answers with.
//! - [`telemetry`], [`metrics`]: JSON logs with trace ids, OTLP export, Prometheus.
//! - [`infra`]: relational store, event bus, cache and object storage, each embedded
//!   or distributed by the scheme of its URL.
//! - [`secrets`]: sealing secrets at rest under the master key, and where it comes from.
//! - [`shutdown`], [`readiness`], [`tenant`]: the small pieces the rest leans on.

pub mod app;
pub mod audit;
pub mod auth;
pub mod budget_holds;
pub mod capsule;
pub mod clock;
pub mod config;
pub mod constitution;
pub mod egress;
pub mod error;
pub mod grpc_channel;
pub mod infra;
pub mod live;
pub mod metrics;
pub mod moderation;
pub mod paging;
pub mod readiness;
pub mod runs;
pub mod secrets;
pub mod server;
pub mod service;
pub mod settings_cache;
pub mod shutdown;
pub mod telemetry;
pub mod tenant;
#[doc(hidden)]
pub mod testing;
pub mod tool_functions;
pub mod turn;

pub use somagent_proto as proto;
/// The cancellation token every long-running part of a service stops on.
pub use tokio_util::sync::CancellationToken;
