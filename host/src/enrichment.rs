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

/// The record's value when no transform replaces it: the event as protobuf
/// JSON (`cvp_proto::json::event_to_json`) and, when the source joined it
/// with CVP's inventory and tags, an `enrichment` member beside the
/// event's own:
///
/// ```json
/// {"key": {...}, ..., "enrichment": {
///   "devices": [{"deviceId": "JPE19181520", "hostname": "leaf1", ...,
///                "streamingStatus": "active", "tags": {"role": ["leaf"]}}],
///   "interfaces": [{"deviceId": "...", "interfaceId": "Ethernet1",
///                   "tags": {"circuit-id": ["C-1001"]}}],
///   "link": "https://cvp.example.com/cv/events/..."}}
/// ```
///
/// A field the inventory left unset is absent; tags are label → values
/// (always a list, as a label may carry several values), sorted.
pub fn default_value(ev: &crate::event::SourceEvent) -> Vec<u8> {
    let mut out = cvp_proto::json::event_to_json(&ev.event);
    if let Some(e) = &ev.enrichment {
        if out.last() == Some(&b'}') {
            out.pop();
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(b"\"enrichment\":");
            write_enrichment(e, &mut out);
            out.push(b'}');
        }
    }
    out
}

/// The `enrichment` object of [`default_value`].
pub fn write_enrichment(e: &Enrichment, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"devices\":[");
    for (i, d) in e.devices.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        device_cached(d, out);
    }
    out.extend_from_slice(b"],\"interfaces\":[");
    for (i, intf) in e.interfaces.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"deviceId\":");
        string(&intf.device_id, out);
        out.extend_from_slice(b",\"interfaceId\":");
        string(&intf.interface_id, out);
        out.extend_from_slice(b",\"tags\":");
        tags(&intf.tags, out);
        out.push(b'}');
    }
    out.push(b']');
    if let Some(link) = &e.link {
        out.extend_from_slice(b",\"link\":");
        string(link, out);
    }
    out.push(b'}');
}

thread_local! {
    /// Each device's JSON as last written, by the address of its `Arc`:
    /// the store replaces a device's `Arc` whenever CVP changes it, so a
    /// version is written once, not once per event (the `Weak` keeps the
    /// address from being reused while the entry is here). Only the
    /// transform thread writes values.
    static DEVICE_JSON: std::cell::RefCell<DeviceJson> = Default::default();
}

/// A device's address → the device (held weakly) and its JSON.
type DeviceJson = std::collections::HashMap<usize, (std::sync::Weak<Device>, Box<[u8]>)>;

/// Entries of `DEVICE_JSON` before it starts again (a few hundred KiB).
const DEVICE_JSON_ENTRIES: usize = 2048;

fn device_cached(d: &Arc<Device>, out: &mut Vec<u8>) {
    let key = Arc::as_ptr(d) as usize;
    DEVICE_JSON.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, json)) = cache.get(&key) {
            out.extend_from_slice(json);
            return;
        }
        let start = out.len();
        write_device(d, out);
        if cache.len() >= DEVICE_JSON_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (Arc::downgrade(d), out[start..].into()));
    });
}

/// One device of the `devices` list.
fn write_device(d: &Device, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"deviceId\":");
    string(&d.id, out);
    for (name, value) in [
        ("hostname", &d.hostname),
        ("fqdn", &d.fqdn),
        ("model", &d.model),
        ("softwareVersion", &d.software_version),
        ("hardwareRevision", &d.hardware_revision),
        ("systemMacAddress", &d.system_mac_address),
    ] {
        if let Some(v) = value {
            out.push(b',');
            string(name, out);
            out.push(b':');
            string(v, out);
        }
    }
    let streaming = match d.streaming {
        Streaming::Unspecified => None,
        Streaming::Inactive => Some("inactive"),
        Streaming::Active => Some("active"),
    };
    if let Some(s) = streaming {
        out.extend_from_slice(b",\"streamingStatus\":");
        string(s, out);
    }
    out.extend_from_slice(b",\"tags\":");
    tags(&d.tags, out);
    out.push(b'}');
}

/// `{"label": ["value", ...], ...}`: labels and values sorted (the store
/// keeps them so), each label once.
fn tags(tags: &[Tag], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut last: Option<&str> = None;
    for t in tags {
        if last == Some(t.label.as_str()) {
            out.push(b',');
        } else {
            if last.is_some() {
                out.extend_from_slice(b"],");
            }
            string(&t.label, out);
            out.extend_from_slice(b":[");
            last = Some(&t.label);
        }
        string(&t.value, out);
    }
    if last.is_some() {
        out.push(b']');
    }
    out.push(b'}');
}

/// A JSON string: CVP's text, escaped by serde_json.
fn string(s: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Op, SourceEvent};

    fn tag(label: &str, value: &str) -> Tag {
        Tag {
            label: label.into(),
            value: value.into(),
            creator: Creator::User,
        }
    }

    #[test]
    fn the_default_value_carries_the_enrichment_beside_the_event() {
        let event = cvp_proto::event::Event {
            title: Some("t".into()),
            ..Default::default()
        };
        let mut ev = SourceEvent {
            event: Arc::new(event),
            op: Op::Updated,
            seq: 0,
            enrichment: None,
        };
        let plain = default_value(&ev);
        assert_eq!(plain, cvp_proto::json::event_to_json(&ev.event));
        ev.enrichment = Some(Arc::new(Enrichment {
            devices: vec![Arc::new(Device {
                id: "JPE1".into(),
                hostname: Some("leaf1\"x".into()),
                streaming: Streaming::Active,
                tags: vec![tag("role", "leaf"), tag("site", "a"), tag("site", "b")],
                ..Default::default()
            })],
            interfaces: vec![Arc::new(Interface {
                device_id: "JPE1".into(),
                interface_id: "Ethernet1".into(),
                tags: vec![],
            })],
            link: Some("https://cvp/cv/events/k".into()),
        }));
        let v: serde_json::Value = serde_json::from_slice(&default_value(&ev)).unwrap();
        let mut expected: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        expected["enrichment"] = serde_json::json!({
                    "devices": [{"deviceId": "JPE1", "hostname": "leaf1\"x", "streamingStatus": "active",
                                 "tags": {"role": ["leaf"], "site": ["a", "b"]}}],
                    "interfaces": [{"deviceId": "JPE1", "interfaceId": "Ethernet1", "tags": {}}],
                    "link": "https://cvp/cv/events/k"
        });
        assert_eq!(v, expected);
    }
}
