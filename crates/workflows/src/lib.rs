//! Durable workflows (DESIGN §5), for any service that needs one.
//!
//! A workflow is a plain async function of a [`Ctx`] and a typed input; everything it
//! does besides computing goes through the context, so an engine can record it and
//! replay it:
//! - [`Ctx::activity`]: I/O, run with a timeout and bounded retries, by name;
//! - [`Ctx::sleep`]: a durable timer;
//! - [`Ctx::signal`]: waits (with a timeout) for a message sent to the run from outside;
//!   messages sent before the run waits are kept for it;
//! - [`Ctx::child`]: starts another workflow under its own id and waits for its result;
//! - [`Ctx::publish`]: the state the run shows to queries while it runs;
//! - [`Ctx::now`] and [`Ctx::random`]: time and randomness that replay the same;
//! - cancellation: once a run is cancelled, every wait it is in or enters fails with
//!   code `cancelled`, and the activity it was running is stopped.
//!
//! Services declare their workflows and activities in a [`Registry`] and hand it to an
//! engine; the engines know no workflow. Two engines implement every verb: [`local`]
//! (journaled in the service's relational store, resumed after a restart) and
//! [`temporal`] (Temporal's history, timers, signals, child workflows and queries).
//! Both keep an index of runs by tenant ([`store`]) for the operators' API.

mod context;
mod engine;
mod error;
pub mod local;
mod metrics;
mod options;
mod registry;
pub mod store;
pub mod temporal;

pub use context::{Ctx, Scope, Step, WorkflowContext};
pub use engine::{
    Engine, EngineError, EngineProbe, Outcome, RunFilter, RunStatus, RunSummary, RunView,
    StartRequest, StepView,
};
pub use error::ActivityError;
pub use metrics::ActivityMetrics;
pub use options::ActivityOptions;
pub use registry::{Activity, ActivityFn, ActivityInfo, Registry, Workflow, WorkflowFn};
pub use store::MIGRATIONS;
