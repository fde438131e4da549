//! Memory's rules, free of I/O: scopes and who owns a memory, how documents become
//! text and chunks, and how two rankings are fused.

pub mod chunking;
pub mod extract;
pub mod fusion;
pub mod scope;
