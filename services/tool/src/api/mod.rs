//! The tool service's transport: gRPC, mapping only.

pub mod grpc;
