//! The workflow engines' contract: every verb, on the local engine (SQLite always,
//! PostgreSQL under `SOMAGENT_TEST_DATABASE_URL`) and on Temporal
//! (`SOMAGENT_TEST_WORKFLOWS_URL`); with `CI=true` a missing server fails the run.

mod contract;
mod engines;
mod probe;
