//! The capsule repository's rules, free of I/O: who may see, review and install a
//! version (`access`), and whether a stored version is still the one its publisher
//! signed (`attest`).

pub mod access;
pub mod attest;
