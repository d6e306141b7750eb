//! Compiles the CloudVision protos with `protox` (pure Rust), so building needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "arista/event.v1/services.gen.proto",
        "arista/inventory.v1/services.gen.proto",
    ];
    println!("cargo:rerun-if-changed=arista");
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
