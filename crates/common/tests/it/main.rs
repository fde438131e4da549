//! Contract suites: every infrastructure backend must behave the same, embedded or
//! real. Each suite runs on the embedded engine always and on the real server whose
//! `SOMAGENT_TEST_*_URL` is set; under `CI=true` a missing URL fails the run.

mod auth;
mod cache;
mod db;
mod events;
mod helpers;
mod objects;
mod server;
mod service_credentials;
