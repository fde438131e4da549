//! One test binary for all end-to-end journeys.

mod api_keys;
mod auth;
mod helpers;
mod mfa;
mod platform;
mod startup;
mod telemetry;
mod tenants;
mod users;
