//! Transport: the gRPC service and the mapping between its messages and the decider.

pub mod grpc;
