//! Why a transform could not be loaded or started: one line that names the
//! transform and says what to fix. Callers show these to users as they are.

use crate::runtime::Fault;

#[derive(Debug, thiserror::Error)]
#[error("transform {transform}: {problem}")]
pub struct LoadError {
    pub transform: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read {code}: {error}")]
    Unreadable { code: String, error: std::io::Error },
    #[error("{code} is not a WebAssembly file")]
    NotWasm { code: String },
    #[error("{code} is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)")]
    CoreModule { code: String },
    #[error("{code} is not a valid component: {detail}")]
    Invalid { code: String, detail: String },
    #[error("{code} was built for {package}@{found}; this cvp-stream accepts {package} {accepted}: rebuild it against this host's wit/")]
    OtherVersion {
        code: String,
        package: &'static str,
        found: String,
        accepted: &'static str,
    },
    #[error("{code} is not a cvp-stream transform: it exports [{exports}], not {package}/transformer; build it against wit/ (world `transform`)")]
    NotATransform {
        code: String,
        exports: String,
        package: &'static str,
    },
    #[error("{code} needs something the host does not offer: {detail}")]
    MissingImport { code: String, detail: String },
    #[error("{code} does not match the {package}@{version} world: {detail}")]
    WorldMismatch {
        code: String,
        package: &'static str,
        version: &'static str,
        detail: String,
    },
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    #[error("init failed: {0}")]
    InitRefused(String),
    #[error("init {0}")]
    InitFault(Fault),
}

impl LoadError {
    pub(crate) fn new(transform: &str, problem: Problem) -> LoadError {
        LoadError {
            transform: transform.to_string(),
            problem,
        }
    }
}
