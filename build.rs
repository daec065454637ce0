//! Compiles `proto/byzmtl/v1/peer.proto` with a vendored `protoc`, so that no system protoc is
//! needed, and writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts run single-threaded before any other code reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("byzmtl_descriptor.bin"))
        .compile_protos(&["proto/byzmtl/v1/peer.proto"], &["proto"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
