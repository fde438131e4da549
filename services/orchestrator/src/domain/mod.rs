//! The orchestrator's rules, free of I/O: what a session and a message may be.

pub mod session;
