//! Policy's rules as values, without I/O: tenant rules, their compilation into Rego, and
//! the output guard's patterns.

pub mod output_guard;
pub mod rego;
pub mod rules;
