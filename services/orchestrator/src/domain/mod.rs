//! The orchestrator's rules, free of I/O: what a session and a message may be, how a
//! tool call's approval goes, and what a project's plan may be.

pub mod approval;
pub mod plan;
pub mod session;
