//! Who may do what: roles, the capabilities they grant, and the principal a request
//! acts as. One table, read by the gateway (route checks), identity (tokens, API key
//! scopes) and every service (checks on internal calls).

mod roles;

pub use roles::{Capability, Role};
