//! Generates the messages, servers and clients of both packages, and the descriptor set that
//! server reflection serves. The .proto files are compiled by `protox` (a protobuf compiler in
//! Rust), so the build needs no system `protoc`.

use prost::Message as _;

const PROTOS: &[&str] = &[
    "joule/v1/inference.proto",
    "joule/v1/admin.proto",
    "joule/internal/v1/worker.proto",
    "joule/internal/v1/state.proto",
    "joule/internal/v1/raft.proto",
    "joule/internal/v1/registry.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    // Every file with its imports, as `protoc --include_imports` writes it.
    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(out.join("joule_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Every map iterates in key order: every replica encodes the same snapshot bytes for
        // the same state (labels, selectors and reasons are inside it), and listings are
        // stable.
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
