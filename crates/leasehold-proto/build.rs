//! Compiles the workspace protos (`/proto` at the workspace top) with
//! tonic-prost-build, using the vendored `protoc` so that no system protoc is
//! needed.

use std::path::Path;

/// Root of the proto tree, relative to this crate.
const PROTO_ROOT: &str = "../../proto";

/// Every proto file to compile, relative to [`PROTO_ROOT`]. Adding a service
/// is one line here plus a module in `src/lib.rs`.
const PROTOS: &[&str] = &[
    "leasehold/raft/v1/raft.proto",
    "leasehold/v1/lease.proto",
    "leasehold/gfs/v1/gfs.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A directory path makes cargo rescan the whole tree, so new files count.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let protos: Vec<_> = PROTOS
        .iter()
        .map(|p| Path::new(PROTO_ROOT).join(p))
        .collect();

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Opaque payloads are bytes::Bytes: decoding then avoids a copy into Vec.
    config.bytes(["."]);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &protos, &[Path::new(PROTO_ROOT).to_path_buf()])?;
    Ok(())
}
