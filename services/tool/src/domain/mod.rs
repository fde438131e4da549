//! The tool service's rules, free of I/O: what a tool and its actions are, how a tool
//! is read from an OpenAPI 3 document, how arguments are checked against an action's
//! schema, how a call becomes an HTTP request, and how lists continue over pages.

pub mod arguments;
pub mod manifest;
pub mod openapi;
pub mod paging;
pub mod request;
