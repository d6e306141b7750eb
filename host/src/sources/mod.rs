//! Where events come from. Each source is a folder; this file lists them
//! and the `source:` block that chooses one. Today: CloudVision's
//! `arista.event.v1.EventService` (`cvp/`).

pub mod cvp;

use serde::Deserialize;

/// The `source:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub cvp: cvp::CvpConfig,
}
