//! The event and the record as a transform reads them: the generated
//! types behind accessors that know what the transform declared, so that
//! reading an undeclared field is an error that names it, not a silent
//! `None` (the host leaves undeclared fields empty).

use crate::bindings::cvp_stream::transform::types as wit;
use crate::{Component, Device, Header, Interface, Operation, Severity, Tag, Timestamp};

/// What a transform declared it reads, parsed once from
/// [`crate::Transform::reads`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    names: Vec<String>,
    all_data: bool,
}

impl Declared {
    pub fn new(names: &[String]) -> Declared {
        Declared {
            all_data: names.iter().any(|n| n == "data"),
            names: names.to_vec(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Panics, naming the field, unless it was declared.
    fn need(&self, name: &str) {
        if !self.has(name) {
            undeclared(name)
        }
    }

    fn need_data(&self, field: &str) {
        if !self.all_data && !self.has(&format!("data.{field}")) {
            undeclared(&format!("data.{field}"))
        }
    }
}

#[cold]
fn undeclared(name: &str) -> ! {
    panic!("read `{name}` without declaring it: add \"{name}\" to the list reads() returns")
}

/// One CloudVision event, merged with its earlier updates, and what the host
/// knows of the devices and interfaces it names.
pub struct Event<'a> {
    raw: &'a wit::Event,
    declared: &'a Declared,
}

impl<'a> Event<'a> {
    pub fn new(raw: &'a wit::Event, declared: &'a Declared) -> Event<'a> {
        Event { raw, declared }
    }

    /// The generated record, for what the accessors do not cover.
    pub fn raw(&self) -> &'a wit::Event {
        self.raw
    }

    /// `key.key`: the event's identifier, stable across its updates.
    pub fn key(&self) -> &'a str {
        &self.raw.key
    }

    /// When the event occurred (nanoseconds since the Unix epoch).
    pub fn timestamp(&self) -> Timestamp {
        self.raw.timestamp
    }

    pub fn operation(&self) -> Operation {
        self.raw.operation
    }

    pub fn severity(&self) -> Severity {
        self.raw.severity
    }

    /// The raw `EventSeverity` number, for values this version does not name.
    pub fn severity_code(&self) -> i32 {
        self.raw.severity_code
    }

    /// Whether the event is at least as severe as `min`. A severity this
    /// SDK does not name (a newer CVP's) counts as severe: better one alert
    /// too many than one lost.
    pub fn severity_at_least(&self, min: Severity) -> bool {
        let unknown = self.raw.severity == Severity::Unspecified && self.raw.severity_code != 0;
        unknown || self.raw.severity >= min
    }

    pub fn last_updated_time(&self) -> Timestamp {
        self.raw.last_updated_time
    }

    /// When the event ended; zero while it is ongoing.
    pub fn delete_time(&self) -> Timestamp {
        self.raw.delete_time
    }

    /// Needs "title".
    pub fn title(&self) -> Option<&'a str> {
        self.declared.need("title");
        self.raw.title.as_deref()
    }

    /// Needs "description".
    pub fn description(&self) -> Option<&'a str> {
        self.declared.need("description");
        self.raw.description.as_deref()
    }

    /// Needs "event-type".
    pub fn event_type(&self) -> Option<&'a str> {
        self.declared.need("event-type");
        self.raw.event_type.as_deref()
    }

    /// Needs "rule-id".
    pub fn rule_id(&self) -> Option<&'a str> {
        self.declared.need("rule-id");
        self.raw.rule_id.as_deref()
    }

    /// One of the event type's own fields. Needs "data" or "data.NAME".
    pub fn data(&self, name: &str) -> Option<&'a str> {
        self.declared.need_data(name);
        self.raw
            .data
            .as_deref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every field of `data`, sorted by name. Needs "data".
    pub fn data_fields(&self) -> &'a [(String, String)] {
        self.declared.need("data");
        self.raw.data.as_deref().unwrap_or_default()
    }

    /// Needs "components".
    pub fn components(&self) -> &'a [Component] {
        self.declared.need("components");
        self.raw.components.as_deref().unwrap_or_default()
    }

    /// The first value of a component field, e.g. `deviceId` or
    /// `interfaceId`, across the event's components. Needs "components".
    pub fn component_field(&self, name: &str) -> Option<&'a str> {
        self.components()
            .iter()
            .flat_map(|c| c.fields.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// CVP's metadata tags. Needs "metadata".
    pub fn metadata(&self) -> &'a [Vec<(String, String)>] {
        self.declared.need("metadata");
        self.raw.metadata.as_deref().unwrap_or_default()
    }

    /// The whole event in the protobuf JSON mapping. Needs "json".
    pub fn json(&self) -> &'a [u8] {
        self.declared.need("json");
        self.raw.json.as_deref().unwrap_or_default()
    }

    /// The devices the event names that CVP's inventory knows. Needs
    /// "devices".
    pub fn devices(&self) -> &'a [Device] {
        self.declared.need("devices");
        self.raw.devices.as_deref().unwrap_or_default()
    }

    /// The inventory record of device `id` (a serial number), if the event
    /// names it and the inventory knows it. Needs "devices".
    pub fn device(&self, id: &str) -> Option<&'a Device> {
        self.devices().iter().find(|d| d.id == id)
    }

    /// The interfaces the event names, with their tags. Needs "interfaces".
    pub fn interfaces(&self) -> &'a [Interface] {
        self.declared.need("interfaces");
        self.raw.interfaces.as_deref().unwrap_or_default()
    }

    /// The event in CloudVision's UI. Needs "link".
    pub fn link(&self) -> Option<&'a str> {
        self.declared.need("link");
        self.raw.link.as_deref()
    }
}

/// The value of the tag `label` among `tags`, e.g. `tag(&device.tags, "site")`.
pub fn tag<'t>(tags: &'t [Tag], label: &str) -> Option<&'t str> {
    tags.iter()
        .find(|t| t.label == label)
        .map(|t| t.value.as_str())
}

/// The record an event is on its way to become.
pub struct Record<'a> {
    raw: &'a wit::Outgoing,
    declared: &'a Declared,
}

impl<'a> Record<'a> {
    pub fn new(raw: &'a wit::Outgoing, declared: &'a Declared) -> Record<'a> {
        Record { raw, declared }
    }

    pub fn topic(&self) -> &'a str {
        &self.raw.topic
    }

    /// `None` is a null key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.raw.key.as_deref()
    }

    /// `None` is a null value. Needs "value".
    pub fn value(&self) -> Option<&'a [u8]> {
        self.declared.need("value");
        self.raw.value.as_deref()
    }

    /// Needs "headers".
    pub fn headers(&self) -> &'a [Header] {
        self.declared.need("headers");
        &self.raw.headers
    }

    /// The first header named `key`, as text. Needs "headers".
    pub fn header(&self, key: &str) -> Option<&'a str> {
        self.headers()
            .iter()
            .find(|h| h.key == key)
            .and_then(|h| std::str::from_utf8(&h.value).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> wit::Event {
        wit::Event {
            key: "k".into(),
            timestamp: 1,
            operation: Operation::Updated,
            severity: Severity::Error,
            severity_code: 3,
            last_updated_time: 0,
            delete_time: 0,
            title: Some("T".into()),
            description: None,
            event_type: None,
            rule_id: None,
            data: Some(vec![("deviceId".into(), "JPE1".into())]),
            components: None,
            metadata: None,
            json: None,
            devices: Some(vec![Device {
                id: "JPE1".into(),
                hostname: Some("leaf1".into()),
                fqdn: None,
                model: None,
                software_version: None,
                hardware_revision: None,
                system_mac_address: None,
                streaming_status: crate::StreamingStatus::Active,
                tags: vec![Tag {
                    label: "site".into(),
                    value: "dc1".into(),
                    creator: crate::TagCreator::User,
                }],
            }]),
            interfaces: None,
            link: None,
        }
    }

    #[test]
    fn declared_fields_read() {
        let d = Declared::new(&crate::fields(&["title", "data.deviceId", "devices"]));
        let raw = raw();
        let e = Event::new(&raw, &d);
        assert_eq!(e.title(), Some("T"));
        assert_eq!(e.data("deviceId"), Some("JPE1"));
        let dev = e.device("JPE1").unwrap();
        assert_eq!(dev.hostname.as_deref(), Some("leaf1"));
        assert_eq!(tag(&dev.tags, "site"), Some("dc1"));
        assert!(e.severity_at_least(Severity::Warning));
    }

    #[test]
    #[should_panic(expected = "read `description` without declaring it")]
    fn an_undeclared_field_is_an_error() {
        let d = Declared::new(&crate::fields(&["title"]));
        let raw = raw();
        let _ = Event::new(&raw, &d).description();
    }

    #[test]
    #[should_panic(expected = "add \"data.other\"")]
    fn an_undeclared_data_field_is_an_error() {
        let d = Declared::new(&crate::fields(&["data.deviceId"]));
        let raw = raw();
        let _ = Event::new(&raw, &d).data("other");
    }
}
