//! Transport: the gRPC service and the mapping between its messages and the store.

pub mod grpc;
