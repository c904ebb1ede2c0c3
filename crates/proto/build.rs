//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine needs no system
//! `protoc`. The encoded descriptor set is written next to the generated code for gRPC reflection.

use std::error::Error;
use std::path::{Path, PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
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
        .compile_fds(file_descriptors.clone())?;

    compile_query_server(&file_descriptors, &out_dir)?;
    Ok(())
}

/// The query service's server once more, into `OUT_DIR/query_server` (`hourglass_proto::query_server`):
/// its two report responses are `Encoded` types holding their encoding, so the service answers a cached
/// report without encoding it again. Every other type is `crate::v1`'s, and nothing else is generated:
/// clients, messages and the descriptor set are those above, so the wire and reflection are unchanged.
fn compile_query_server(
    file_descriptors: &prost_types::FileDescriptorSet,
    out_dir: &Path,
) -> Result<(), Box<dyn Error>> {
    let mut query_file = file_descriptors.clone();
    query_file.file.retain(|file| file.name() == "hourglass/v1/query.proto");
    let server_dir = out_dir.join("query_server");
    std::fs::create_dir_all(&server_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&server_dir)
        // The exact paths win over the package's (prost resolves the longest match).
        .extern_path(".hourglass.v1.GetHourlyMetricsResponse", "crate::query_server::EncodedGetHourlyMetricsResponse")
        .extern_path(".hourglass.v1.GetPeriodMetricsResponse", "crate::query_server::EncodedGetPeriodMetricsResponse")
        .extern_path(".hourglass.v1", "crate::v1")
        .compile_fds(query_file)?;
    Ok(())
}
