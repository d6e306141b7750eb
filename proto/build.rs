//! Compiles the CloudVision protos with `protox` (pure Rust), so building needs
//! no system `protoc`, and keeps the compiled descriptor set for the JSON
//! reader (`prost-reflect` walks it instead of hand-written parsing code).

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "arista/event.v1/services.gen.proto",
        "arista/inventory.v1/services.gen.proto",
        "arista/tag.v2/services.gen.proto",
    ];
    println!("cargo:rerun-if-changed=arista");
    let fds = protox::compile(files, ["."])?;
    // The same descriptors the Rust types are generated from, imports
    // included, so the reader and the types cannot drift apart.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // A server need not implement every call of a service: the
        // simulator serves Subscribe of DeviceService and
        // TagAssignmentService, and the rest answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
