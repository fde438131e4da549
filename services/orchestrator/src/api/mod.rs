//! Transport: the gRPC service and the mapping between its messages and the use cases.

pub mod grpc;
pub mod workflows;
