//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh machine needs no system
//! `protoc`. The encoded descriptor set is written next to the generated code for gRPC reflection.
//!
//! A second generation, `wire`, is the collector's own view of the same wire format: the messages that
//! carry events (`hourglass.v1.Event`) in the ingest requests and the event-log record, with each event as
//! its encoded bytes (`bytes::Bytes`). An embedded message and a `bytes` field are encoded alike
//! (length-delimited), so the view reads and writes exactly the public format; it is derived here from
//! the public descriptors, never written by hand, so the two cannot drift. Reflection keeps serving the
//! public descriptor set.

use std::error::Error;
use std::path::{Path, PathBuf};

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// The message every `wire` field of bytes stands for.
const EVENT_TYPE_NAME: &str = ".hourglass.v1.Event";
/// The messages whose events `wire` keeps as bytes. A message that starts carrying events must be added
/// here (the build fails until it is), so that choosing how the collector reads it is a decision.
const WIRE_MESSAGES: [&str; 4] = [
    ".hourglass.v1.IngestRequest",
    ".hourglass.v1.IngestStreamRequest",
    ".hourglass.v1.IngestBatchRequest",
    ".hourglass.log.v1.EventBatchRecord",
];
/// The files `wire` is generated from (with what they import).
const WIRE_FILES: [&str; 2] = ["hourglass/v1/ingest.proto", "hourglass/log/v1/record.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        "hourglass/v1/event.proto",
        "hourglass/v1/ingest.proto",
        "hourglass/v1/query.proto",
        "hourglass/log/v1/record.proto",
        "hourglass/admin/v1/admin.proto",
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
    compile_wire(&file_descriptors, &out_dir.join("wire"))?;
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

/// Generates the `wire` view into `wire_dir`: [`WIRE_MESSAGES`] with every `Event` field turned into
/// `bytes`, every other message and enum being the public one (an extern path to `crate::v1` or
/// `crate::log::v1`).
fn compile_wire(public: &FileDescriptorSet, wire_dir: &Path) -> Result<(), Box<dyn Error>> {
    std::fs::create_dir_all(wire_dir)?;
    let dependencies = ["google/protobuf/timestamp.proto", "hourglass/v1/event.proto"];
    let mut files: Vec<FileDescriptorProto> = public
        .file
        .iter()
        .filter(|file| WIRE_FILES.contains(&file.name()) || dependencies.contains(&file.name()))
        .cloned()
        .collect();
    let mut changed = Vec::new();
    let mut public_types = Vec::new();
    for file in &mut files {
        let package = format!(".{}", file.package());
        for message in &mut file.message_type {
            let name = format!("{package}.{}", message.name());
            let mut carries_events = false;
            for field in &mut message.field {
                if field.type_name() == EVENT_TYPE_NAME {
                    field.set_type(Type::Bytes);
                    field.type_name = None;
                    carries_events = true;
                }
            }
            if carries_events {
                changed.push(name);
            } else {
                public_types.push(name);
            }
        }
        public_types.extend(file.enum_type.iter().map(|enumeration| format!("{package}.{}", enumeration.name())));
    }
    changed.sort();
    let mut expected: Vec<String> = WIRE_MESSAGES.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    if changed != expected {
        return Err(
            format!("messages carrying {EVENT_TYPE_NAME} are {changed:?}; build.rs expects {expected:?}").into()
        );
    }

    let mut config = tonic_prost_build::configure().out_dir(wire_dir).bytes(".");
    for name in public_types.iter().filter(|name| !name.starts_with(".google.")) {
        let rust_path = if let Some(type_name) = name.strip_prefix(".hourglass.log.v1.") {
            format!("crate::log::v1::{type_name}")
        } else if let Some(type_name) = name.strip_prefix(".hourglass.v1.") {
            format!("crate::v1::{type_name}")
        } else {
            return Err(format!("no public module for {name}").into());
        };
        config = config.extern_path(name, rust_path);
    }
    config.compile_fds(FileDescriptorSet { file: files })?;
    Ok(())
}
