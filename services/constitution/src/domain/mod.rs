//! The constitution as a value: its hash and its signature, without I/O.

pub mod signing;
