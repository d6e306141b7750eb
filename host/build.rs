//! Builds the transforms workspace (transforms/) for wasm32-wasip2 so that
//! the stock title-to-key component can be embedded in the binary (for
//! `demo`) and the test suite finds every example component.
//!
//! The nested cargo gets its own target directory (target/wasm) so it never
//! waits on the lock of the build that runs this script.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("host/ lives in the workspace")
        .to_path_buf();
    let transforms = root.join("transforms");
    let target_dir = root.join("target").join("wasm");
    let out = target_dir.join("wasm32-wasip2").join("release");

    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for dir in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "sdk-0.1",
        "title-to-key",
        "title-to-key-0.1",
        "severity-filter",
        "route-by-type",
        "misbehave",
    ] {
        println!("cargo:rerun-if-changed={}", transforms.join(dir).display());
    }
    println!("cargo:rustc-env=CVP_STREAM_WASM_DIR={}", out.display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&transforms)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for transforms/: {e}"));
    if !status.success() {
        panic!(
            "building transforms/ for wasm32-wasip2 failed (see above). If the target is missing: rustup target add wasm32-wasip2"
        );
    }
}
