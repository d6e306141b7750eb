//! What the host knows about the devices and interfaces an event names,
//! joined onto the event by the CVP source from CloudVision's inventory
//! (`arista.inventory.v1`) and tags (`arista.tag.v2`): the domain types
//! that the source fills, and that the transform contract (0.2's
//! `devices`, `interfaces`, `link`) and the default JSON value read.
//!
//! An event carries a snapshot taken when the source sent it on, so a
//! rename or an upgrade applies to the next event, and a transform never
//! sees the inventory change under it.

use std::sync::Arc;

/// Who made a tag assignment (`arista.tag.v2.CreatorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Creator {
    #[default]
    Unspecified,
    System,
    User,
    External,
}

/// A tag assigned in the mainline workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub label: String,
    pub value: String,
    pub creator: Creator,
}

/// `arista.inventory.v1.StreamingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Streaming {
    #[default]
    Unspecified,
    Inactive,
    Active,
}

/// A device as the inventory knows it, with its device tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Device {
    /// The serial number: what events call `deviceId`.
    pub id: String,
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub model: Option<String>,
    pub software_version: Option<String>,
    pub hardware_revision: Option<String>,
    pub system_mac_address: Option<String>,
    pub streaming: Streaming,
    pub tags: Vec<Tag>,
}

/// An interface an event names, with its interface tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub device_id: String,
    pub interface_id: String,
    pub tags: Vec<Tag>,
}

/// What an event is joined with.
#[derive(Debug, Clone, Default)]
pub struct Enrichment {
    /// The devices the event names (components, then `data`) that the
    /// inventory knows, each once, in the order first named.
    pub devices: Vec<Arc<Device>>,
    /// The interfaces the event names, each once.
    pub interfaces: Vec<Arc<Interface>>,
    /// The event in CloudVision's UI.
    pub link: Option<String>,
}
