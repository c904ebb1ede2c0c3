//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine needs no system
//! `protoc`. The encoded descriptor set is written next to the generated code for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        "hourglass/v1/event.proto",
        "hourglass/v1/ingest.proto",
        "hourglass/v1/query.proto",
        "hourglass/log/v1/record.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    let file_descriptors = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("hourglass_descriptor.bin"), file_descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        // Sorted maps encode deterministically and are as fast as hash maps at property-map sizes.
        .btree_map(".")
        .compile_fds(file_descriptors)?;
    Ok(())
}
