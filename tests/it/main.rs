//! One test binary for all end-to-end journeys.

mod api_keys;
mod auth;
mod chat;
mod helpers;
mod lifecycle;
mod local_model;
mod mfa;
mod openai_client;
mod openapi;
mod platform;
mod policy;
mod rate_limits;
mod rbac;
mod service_tokens;
mod sessions;
mod startup;
mod telemetry;
mod tenants;
mod users;
