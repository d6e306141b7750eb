//! `cvp-stream transform new --lang rust|python|js NAME`: a working transform
//! project from the templates in host/templates/, compiled into the binary.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Args, Debug)]
pub struct TransformNewArgs {
    /// The transform's name: lower-case letters, digits and dashes.
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create it (default: a folder named NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Rust SDK crate (transforms/sdk in cvp-stream's source), when the
    /// binary was built elsewhere.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// The contract, written into Python and JavaScript projects (their build
/// tools read it); Rust projects get it through the SDK crate.
const WIT: &str = include_str!("../../../wit/transform.wit");

struct Template {
    path: &'static str,
    text: &'static str,
}

macro_rules! templates {
    ($($path:literal),* $(,)?) => {
        &[$(Template { path: $path, text: include_str!(concat!("../../templates/", $path)) }),*]
    };
}

const RUST: &[Template] = templates![
    "rust/Cargo.toml",
    "rust/.cargo/config.toml",
    "rust/src/lib.rs",
    "rust/README.md"
];
/// A Python or JavaScript project gets the templates and a copy of its SDK
/// helpers, so that it builds anywhere. The helpers are embedded from
/// transforms/*/sdk, where the examples use them: one file, no drift.
macro_rules! with_sdk {
    ([$($path:literal),* $(,)?], [$($sdk_path:literal => $sdk_file:literal),* $(,)?]) => {
        &[
            $(Template { path: $path, text: include_str!(concat!("../../templates/", $path)) },)*
            $(Template { path: $sdk_path, text: include_str!(concat!("../../../transforms/", $sdk_file)) },)*
        ]
    };
}

const PYTHON: &[Template] = with_sdk!(
    ["python/app.py", "python/build.sh", "python/README.md"],
    ["python/cvp_transform.py" => "python/sdk/cvp_transform.py"]
);
const JS: &[Template] = with_sdk!(
    [
        "js/transform.js",
        "js/package.json",
        "js/build.sh",
        "js/README.md"
    ],
    [
        "js/cvp-transform.js" => "js/sdk/cvp-transform.js",
        "js/bundle.config.mjs" => "js/sdk/bundle.config.mjs",
    ]
);

pub fn run(args: TransformNewArgs) -> Result<()> {
    let name = &args.name;
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("transform name {name:?}: use lower-case letters, digits and dashes, starting with a letter (e.g. my-filter)");
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    let (templates, lang) = match args.lang {
        Lang::Rust => (RUST, "rust"),
        Lang::Python => (PYTHON, "python"),
        Lang::Js => (JS, "js"),
    };
    let sdk = match args.lang {
        Lang::Rust => sdk_path(args.sdk.as_deref())?.display().to_string(),
        _ => String::new(),
    };
    let snake = name.replace('-', "_");
    for t in templates {
        let relative = t
            .path
            .strip_prefix(lang)
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or(t.path);
        let text = t
            .text
            .replace("{{name_snake}}", &snake)
            .replace("{{name}}", name)
            .replace("{{sdk_path}}", &sdk);
        write(&dir.join(relative), &text, relative.ends_with(".sh"))?;
    }
    if !matches!(args.lang, Lang::Rust) {
        write(&dir.join("wit/transform.wit"), WIT, false)?;
    }
    let build = match args.lang {
        Lang::Rust => {
            format!("cargo build --release   # -> target/wasm32-wasip2/release/{snake}.wasm")
        }
        _ => format!("./build.sh              # -> {snake}.wasm"),
    };
    println!("created {lang} transform {name} in {}\n\n  cd {}\n  {build}\n  cvp-stream transform test <the .wasm>\n\nSee {}/README.md.", dir.display(), dir.display(), dir.display());
    Ok(())
}

/// The Rust SDK lives in cvp-stream's source tree (it is not published).
fn sdk_path(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../transforms/sdk"),
    };
    let path = path
        .canonicalize()
        .with_context(|| format!("the Rust SDK is not at {}: give its folder (transforms/sdk in cvp-stream's source) with --sdk", path.display()))?;
    if !path.join("Cargo.toml").exists() {
        bail!(
            "{} is not the SDK crate (no Cargo.toml); give transforms/sdk with --sdk",
            path.display()
        );
    }
    Ok(path)
}

fn write(path: &Path, text: &str, executable: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}
