//! Joule's gRPC API: the public `joule.v1` types (requests, sampling, streamed token events,
//! usage with joules) and the internal `joule.internal.v1.Worker` service a scheduler calls on a
//! worker. The `.proto` files in this crate are the source of truth; [`convert`] is the one place
//! that maps them to and from engine types.

pub mod convert;

/// Public request and response types (`joule/v1/inference.proto`).
pub mod v1 {
    tonic::include_proto!("joule.v1");
}

/// Between components: the worker service (`joule/internal/v1/worker.proto`), the scheduler's
/// replicated state and its commands (`state.proto`), and the replica-to-replica Raft transport
/// (`raft.proto`).
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("joule.internal.v1");
    }
}

/// Encoded descriptors of both packages, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/joule_descriptor.bin"));
