//! The tool service's rules, free of I/O: what a tool and its actions are, how a tool
//! is read from an OpenAPI 3 document, how arguments are checked against an action's
//! schema, how a call becomes an HTTP request, how lists continue over pages, and how an
//! MCP server becomes a tool; the code tool.

pub mod arguments;
pub mod browser;
pub mod code;
pub mod credentials;
pub mod manifest;
pub mod mcp;
pub mod memory_tool;
pub mod openapi;
pub mod paging;
pub mod request;
pub mod signing;
pub mod xml;
