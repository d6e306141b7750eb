//! Transforms compiled into the binary, named in configs as
//! `path: builtin:NAME`, so the stock behaviour needs no `.wasm` on disk.

/// The stock title-to-key transform, built from transforms/ by build.rs.
pub const TITLE_TO_KEY: &[u8] =
    include_bytes!(concat!(env!("CVP_STREAM_WASM_DIR"), "/title_to_key.wasm"));

pub const PREFIX: &str = "builtin:";
pub const TITLE_TO_KEY_PATH: &str = "builtin:title-to-key";

/// A `builtin:` path that names no built-in.
#[derive(Debug, thiserror::Error)]
#[error("there is no built-in transform {0:?} (built in: title-to-key)")]
pub struct UnknownBuiltin(String);

/// The bytes of a `builtin:` path; `None` for an ordinary path.
pub fn lookup(path: &std::path::Path) -> Option<Result<&'static [u8], UnknownBuiltin>> {
    let name = path.to_str()?.strip_prefix(PREFIX)?;
    Some(match name {
        "title-to-key" => Ok(TITLE_TO_KEY),
        other => Err(UnknownBuiltin(other.to_string())),
    })
}

/// Built-ins that replace the incoming record's value without reading it,
/// so the host need not encode one for them (`pipeline.default_value: auto`).
pub fn sets_own_value(path: &std::path::Path) -> bool {
    path.to_str() == Some(TITLE_TO_KEY_PATH)
}
