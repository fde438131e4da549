//! The model gateway's rules, free of I/O: chat messages and deltas, how a stream of
//! deltas becomes a completion, embeddings, profiles and what a call costs, and the guard an
//! answer's text passes as it streams.

pub mod chat;
pub mod counting;
pub mod embedding;
pub mod json_shape;
pub mod output_guard;
pub mod pricing;
pub mod profile;
