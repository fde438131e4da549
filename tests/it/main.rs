//! One test binary for all end-to-end journeys.

mod helpers;
mod platform;
mod startup;
mod telemetry;
