//! Billing's rules, free of I/O: what a usage event says as a ledger entry, and how
//! usage is grouped.

pub mod budget;
pub mod entry;
pub mod grouping;
