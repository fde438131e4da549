//! The model gateway's rules, free of I/O: chat messages and deltas, how a stream of
//! deltas becomes a completion, profiles and what a call costs.

pub mod chat;
pub mod pricing;
pub mod profile;
