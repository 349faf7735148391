//! Generates the messages, servers and clients of both packages, and the descriptor set that
//! server reflection serves. Needs `protoc` (Debian: `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("joule_descriptor.bin"))
        // Every map iterates in key order: every replica encodes the same snapshot bytes for
        // the same state (labels, selectors and reasons are inside it), and listings are
        // stable.
        .btree_map(".")
        .compile_protos(
            &[
                "joule/v1/inference.proto",
                "joule/v1/admin.proto",
                "joule/internal/v1/worker.proto",
                "joule/internal/v1/state.proto",
                "joule/internal/v1/raft.proto",
                "joule/internal/v1/registry.proto",
            ],
            &["."],
        )?;
    Ok(())
}
