//! Contract 0.2 on the host side: the fields a transform declares it reads
//! ([`Reads`]), the event and record handed to it as borrowed views lowered
//! straight into the guest ([`EventView`], no owned copies of the event's
//! strings), and its answer, a list of patches, applied to the record it
//! was given ([`Draft`]).
//!
//! The views mirror `wit/transform.wit` field for field, in order: wasmtime
//! checks them against the component's types when the call is made.

use crate::bindings::v02::cvp_stream::transform::types as wit;
use crate::bindings::{Header, KafkaRecord};
use wasmtime::component::{ComponentType, Lower};

pub use wit::{
    BytesChange, Operation as Operation02, Output as Output02, Patch, Severity as Severity02,
    StreamingStatus, TagCreator,
};

/// The names a transform may declare, as `init` documents them; `data.NAME`
/// stands for any one `data` field.
pub const FIELD_NAMES: [&str; 14] = [
    "title",
    "description",
    "event-type",
    "rule-id",
    "data",
    "data.NAME",
    "components",
    "metadata",
    "json",
    "devices",
    "interfaces",
    "link",
    "value",
    "headers",
];

/// What a transform reads: the fields the host fills for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    pub title: bool,
    pub description: bool,
    pub event_type: bool,
    pub rule_id: bool,
    pub data: DataReads,
    pub components: bool,
    pub metadata: bool,
    pub json: bool,
    pub devices: bool,
    pub interfaces: bool,
    pub link: bool,
    /// The record's value (the default one is built for it).
    pub value: bool,
    pub headers: bool,
}

/// Which of the event's `data` fields a transform reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataReads {
    #[default]
    None,
    All,
    /// These, sorted.
    Named(Vec<String>),
}

impl DataReads {
    /// Whether the `data` field `name` is read.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            DataReads::None => false,
            DataReads::All => true,
            DataReads::Named(names) => names.binary_search_by(|n| n.as_str().cmp(name)).is_ok(),
        }
    }
}

impl Reads {
    /// Everything: what a 0.1 transform gets.
    pub fn all() -> Reads {
        Reads {
            title: true,
            description: true,
            event_type: true,
            rule_id: true,
            data: DataReads::All,
            components: true,
            metadata: true,
            json: true,
            devices: true,
            interfaces: true,
            link: true,
            value: true,
            headers: true,
        }
    }

    /// Reads the names a transform's `init` returned. An unknown name is
    /// an error that lists the known ones (a typo must not silently leave a
    /// field empty).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Reads, String> {
        let mut r = Reads::default();
        let mut data = Vec::new();
        for name in names {
            let name = name.as_ref();
            match name {
                "title" => r.title = true,
                "description" => r.description = true,
                "event-type" => r.event_type = true,
                "rule-id" => r.rule_id = true,
                "data" => r.data = DataReads::All,
                "components" => r.components = true,
                "metadata" => r.metadata = true,
                "json" => r.json = true,
                "devices" => r.devices = true,
                "interfaces" => r.interfaces = true,
                "link" => r.link = true,
                "value" => r.value = true,
                "headers" => r.headers = true,
                other => match other.strip_prefix("data.") {
                    Some(field) if !field.is_empty() => data.push(field.to_string()),
                    _ => {
                        return Err(format!(
                            "declares that it reads `{other}`, which is not a field of the 0.2 contract (known: {})",
                            FIELD_NAMES.join(", ")
                        ))
                    }
                },
            }
        }
        if r.data != DataReads::All && !data.is_empty() {
            data.sort();
            data.dedup();
            r.data = DataReads::Named(data);
        }
        Ok(r)
    }
}

/// A component the event is about (`component`).
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct ComponentView<'a> {
    pub kind: &'a str,
    pub fields: Vec<(&'a str, &'a str)>,
}

/// A tag assignment (`tag`).
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct TagView<'a> {
    pub label: &'a str,
    pub value: &'a str,
    pub creator: TagCreator,
}

/// A device from the inventory (`device`).
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct DeviceView<'a> {
    pub id: &'a str,
    pub hostname: Option<&'a str>,
    pub fqdn: Option<&'a str>,
    pub model: Option<&'a str>,
    #[component(name = "software-version")]
    pub software_version: Option<&'a str>,
    #[component(name = "hardware-revision")]
    pub hardware_revision: Option<&'a str>,
    #[component(name = "system-mac-address")]
    pub system_mac_address: Option<&'a str>,
    #[component(name = "streaming-status")]
    pub streaming_status: StreamingStatus,
    pub tags: Vec<TagView<'a>>,
}

/// An interface with its tags (`interface`).
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct InterfaceView<'a> {
    #[component(name = "device-id")]
    pub device_id: &'a str,
    #[component(name = "interface-id")]
    pub interface_id: &'a str,
    pub tags: Vec<TagView<'a>>,
}

/// The event as a 0.2 transform receives it (`event`): the caller fills
/// the optional fields that [`Reads`] names and leaves the others `None`.
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub struct EventView<'a> {
    pub key: &'a str,
    pub timestamp: i64,
    pub operation: Operation02,
    pub severity: Severity02,
    #[component(name = "severity-code")]
    pub severity_code: i32,
    #[component(name = "last-updated-time")]
    pub last_updated_time: i64,
    #[component(name = "delete-time")]
    pub delete_time: i64,
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    #[component(name = "event-type")]
    pub event_type: Option<&'a str>,
    #[component(name = "rule-id")]
    pub rule_id: Option<&'a str>,
    pub data: Option<Vec<(&'a str, &'a str)>>,
    pub components: Option<Vec<ComponentView<'a>>>,
    pub metadata: Option<Vec<Vec<(&'a str, &'a str)>>>,
    pub json: Option<Vec<u8>>,
    pub devices: Option<Vec<DeviceView<'a>>>,
    pub interfaces: Option<Vec<InterfaceView<'a>>>,
    pub link: Option<&'a str>,
}

/// The record as it stands (`outgoing`).
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct OutgoingView<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
}

/// One unit of work (`input`).
#[derive(ComponentType, Lower, Clone, Debug)]
#[component(record)]
pub(crate) struct InputView<'a> {
    pub event: EventView<'a>,
    pub record: OutgoingView<'a>,
}

/// A record on its way down the chain. Its value may still be the event's
/// default value, not built yet: it is built when a transform reads it or
/// the record reaches the end with it.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub record: KafkaRecord,
    /// `record.value` stands for the event's default value, unbuilt.
    pub lazy: bool,
}

impl Draft {
    pub fn built(record: KafkaRecord) -> Draft {
        Draft {
            record,
            lazy: false,
        }
    }

    /// Builds the default value if it stands for it.
    pub fn materialise(&mut self, default_value: impl FnOnce() -> Option<Vec<u8>>) {
        if self.lazy {
            self.record.value = default_value();
            self.lazy = false;
        }
    }

    /// The view a 0.2 transform gets: value and headers only when read.
    pub fn view<'a>(&'a self, reads: &Reads) -> OutgoingView<'a> {
        OutgoingView {
            topic: &self.record.topic,
            key: self.record.key.as_deref(),
            value: if reads.value {
                self.record.value.as_deref()
            } else {
                None
            },
            headers: if reads.headers {
                &self.record.headers
            } else {
                &[]
            },
        }
    }

    /// This record with `patch` applied.
    pub fn patched(&self, patch: Patch) -> Draft {
        let mut d = Draft {
            record: KafkaRecord {
                topic: patch.topic.unwrap_or_else(|| self.record.topic.clone()),
                key: change(&self.record.key, patch.key),
                value: None,
                headers: Vec::new(),
            },
            lazy: false,
        };
        match patch.value {
            BytesChange::Keep => {
                d.record.value = self.record.value.clone();
                d.lazy = self.lazy;
            }
            other => d.record.value = change(&None, other),
        }
        let mut headers = match patch.headers {
            Some(replaced) => replaced.into_iter().map(header).collect(),
            None => self.record.headers.clone(),
        };
        for h in patch.set_headers {
            headers.retain(|old| old.key != h.key);
            headers.push(header(h));
        }
        if !patch.remove_headers.is_empty() {
            headers.retain(|old| !patch.remove_headers.contains(&old.key));
        }
        d.record.headers = headers;
        d
    }
}

fn change(old: &Option<Vec<u8>>, c: BytesChange) -> Option<Vec<u8>> {
    match c {
        BytesChange::Keep => old.clone(),
        BytesChange::Null => None,
        BytesChange::Set(bytes) => Some(bytes),
    }
}

fn header(h: wit::Header) -> Header {
    Header {
        key: h.key,
        value: h.value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft::built(KafkaRecord {
            topic: "events".into(),
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![
                Header {
                    key: "a".into(),
                    value: b"1".to_vec(),
                },
                Header {
                    key: "b".into(),
                    value: b"2".to_vec(),
                },
            ],
        })
    }

    fn empty() -> Patch {
        Patch {
            topic: None,
            key: BytesChange::Keep,
            value: BytesChange::Keep,
            headers: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }

    fn wh(k: &str, v: &str) -> wit::Header {
        wit::Header {
            key: k.into(),
            value: v.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_empty_patch_is_the_record_unchanged() {
        let d = draft();
        let p = d.patched(empty());
        assert_eq!(format!("{:?}", p.record), format!("{:?}", d.record));
    }

    #[test]
    fn a_patch_sets_nulls_and_edits_headers_in_order() {
        let p = draft().patched(Patch {
            topic: Some("other".into()),
            key: BytesChange::Null,
            value: BytesChange::Set(b"new".to_vec()),
            headers: None,
            set_headers: vec![wh("a", "9"), wh("c", "3")],
            remove_headers: vec!["b".into()],
        });
        assert_eq!(p.record.topic, "other");
        assert_eq!(p.record.key, None);
        assert_eq!(p.record.value.as_deref(), Some(&b"new"[..]));
        let hs: Vec<(&str, &[u8])> = p
            .record
            .headers
            .iter()
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .collect();
        assert_eq!(hs, vec![("a", &b"9"[..]), ("c", &b"3"[..])]);
        let replaced = draft().patched(Patch {
            headers: Some(vec![wh("z", "0")]),
            ..empty()
        });
        assert_eq!(replaced.record.headers.len(), 1);
        assert_eq!(replaced.record.headers[0].key, "z");
    }

    #[test]
    fn a_kept_default_value_stays_unbuilt() {
        let mut d = draft();
        d.record.value = None;
        d.lazy = true;
        let p = d.patched(empty());
        assert!(p.lazy && p.record.value.is_none());
        let set = d.patched(Patch {
            value: BytesChange::Set(b"x".to_vec()),
            ..empty()
        });
        assert!(!set.lazy);
    }

    #[test]
    fn reads_are_parsed_and_unknown_names_refused() {
        let r = Reads::parse(&["title", "data.deviceId", "data.a", "value"]).unwrap();
        assert!(r.title && r.value && !r.description && !r.headers);
        assert_eq!(
            r.data,
            DataReads::Named(vec!["a".into(), "deviceId".into()])
        );
        assert!(r.data.wants("deviceId") && !r.data.wants("other"));
        assert_eq!(
            Reads::parse(&["data", "data.x"]).unwrap().data,
            DataReads::All
        );
        let e = Reads::parse(&["titel"]).unwrap_err();
        assert!(e.contains("`titel`") && e.contains("title"), "{e}");
        assert!(Reads::parse(&["data."]).is_err());
    }
}
