//! Settings' rules, free of I/O: the documents' shapes and how a patch applies.

pub mod schema;
