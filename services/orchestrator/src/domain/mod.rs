//! The orchestrator's rules, free of I/O: what a session and a message may be, and how
//! a tool call's approval goes.

pub mod approval;
pub mod session;
