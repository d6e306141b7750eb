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
}

/// The contract, written into every project (their build tools read it;
/// a Rust project's copy is in its vendored SDK).
const WIT: &str = include_str!("../../../wit/transform.wit");

/// The Rust SDK, vendored into a Rust project (it is not published): its
/// sources as they are in transforms/sdk, and a manifest of its own (the
/// one in transforms/ inherits from that workspace).
const RUST_SDK: &[Template] = &[
    Template {
        path: "src/lib.rs",
        text: include_str!("../../../transforms/sdk/src/lib.rs"),
    },
    Template {
        path: "src/config.rs",
        text: include_str!("../../../transforms/sdk/src/config.rs"),
    },
    Template {
        path: "src/event.rs",
        text: include_str!("../../../transforms/sdk/src/event.rs"),
    },
    Template {
        path: "src/ext.rs",
        text: include_str!("../../../transforms/sdk/src/ext.rs"),
    },
    Template {
        path: "src/log.rs",
        text: include_str!("../../../transforms/sdk/src/log.rs"),
    },
    Template {
        path: "src/patch.rs",
        text: include_str!("../../../transforms/sdk/src/patch.rs"),
    },
];
const RUST_SDK_MANIFEST: &str = r#"# The Rust SDK of cvp-stream transforms (contract 0.2), vendored by
# `cvp-stream transform new` from transforms/sdk in cvp-stream's source.
[package]
name = "cvp-transform-sdk"
version = "0.2.0"
edition = "2021"
rust-version = "1.85"
publish = false

[dependencies]
wit-bindgen = "0.63"
serde = "1"
serde_json = "1"
"#;

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
            .replace("{{name}}", name);
        write(&dir.join(relative), &text, relative.ends_with(".sh"))?;
    }
    if matches!(args.lang, Lang::Rust) {
        let sdk = dir.join("cvp-transform-sdk");
        write(&sdk.join("Cargo.toml"), RUST_SDK_MANIFEST, false)?;
        for t in RUST_SDK {
            write(&sdk.join(t.path), t.text, false)?;
        }
        write(&sdk.join("wit/transform.wit"), WIT, false)?;
    } else {
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
