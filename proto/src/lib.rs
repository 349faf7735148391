//! Joule's gRPC API: the public `joule.v1` types (requests, sampling, streamed token events,
//! usage with joules, the admin API) and the internal `joule.internal.v1` services between
//! components. The `.proto` files in this crate are the source of truth. This crate holds types
//! and the naming rules every component shares ([`names`]); it must never depend on the engine
//! or do I/O: conversions to engine types live in the worker, next to the engine. With the
//! `server` feature it also holds what every daemon shares: server reflection and the log setup
//! (`logging`).

#[cfg(feature = "server")]
pub mod logging;
pub mod names;

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

/// gRPC server reflection over Joule's packages and the health service, in both
/// `grpc.reflection.v1` and `v1alpha` (grpcio-reflection and older grpcurl speak only
/// v1alpha). Every daemon serves both pairs.
#[cfg(feature = "server")]
pub mod reflection {
    use tonic_reflection::server::{Builder, Error, v1, v1alpha};

    fn builder() -> Builder<'static> {
        Builder::configure()
            .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    }

    /// The `v1` service.
    pub fn v1() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, Error> {
        builder().build_v1()
    }

    /// The `v1alpha` service.
    pub fn v1alpha()
    -> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, Error> {
        builder().build_v1alpha()
    }
}
