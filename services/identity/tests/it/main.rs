//! The identity service, started from its lib as `somagent up` does.

mod bootstrap;
mod sealed_secrets;
