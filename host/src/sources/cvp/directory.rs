//! The enrichment store: what CVP's inventory (`inventory.rs`) and tags
//! (`tags.rs`) say about each device and interface, in memory, bounded
//! (`enrich.max_devices`, `enrich.max_tag_assignments`), and the join of an
//! event with it (`Directory::enrich`).
//!
//! Each device and interface is an `Arc` that is replaced, never changed,
//! when CVP says something new of it: an event holds the versions current
//! when the source sent it on, so a transform never sees one change under
//! it, and the next event sees the rename.

use super::config::EnrichConfig;
use crate::enrichment::{Creator, Device, Enrichment, Interface, Streaming, Tag};
use crate::event::SourceEvent;
use crate::metrics;
use cvp_proto::event::Event;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

/// A tag assignment as `tags.rs` reads it from CVP: on a device, or on one
/// of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub device_id: String,
    pub interface_id: Option<String>,
    pub tag: Tag,
}

/// Which subscription a change came from, for the metrics' `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    Inventory,
    Tags,
}

impl Feed {
    pub fn label(self) -> &'static str {
        match self {
            Feed::Inventory => "inventory",
            Feed::Tags => "tags",
        }
    }
}

pub struct Directory {
    store: RwLock<Store>,
    /// With the inventory on, a device only tags know is left out of
    /// events (the contract says so: the inventory does not know it yet).
    inventory: bool,
    max_devices: usize,
    max_tags: usize,
    link: Option<Link>,
    /// When the bounds were last logged at warning level (at most once a
    /// minute each; the metric counts every one).
    warned: std::sync::Mutex<[Option<Instant>; 2]>,
}

#[derive(Default)]
struct Store {
    devices: HashMap<String, Entry>,
    /// Interface tags: device id → its tagged interfaces, sorted by
    /// interface id. A device has a few dozen: a sorted vector is found as
    /// fast as a map and costs no key copies (100,000 interface tags took
    /// 65 MiB in maps; BENCHMARKS.md).
    interfaces: HashMap<String, Vec<Arc<Interface>>>,
    tag_count: usize,
}

struct Entry {
    device: Arc<Device>,
    /// The inventory knows it (it may be here for its tags alone).
    in_inventory: bool,
}

/// The link template, split once: literal text and the placeholders.
struct Link(Vec<Part>);

enum Part {
    Text(String),
    Key,
    Timestamp,
}

impl Link {
    fn parse(template: &str, ui_url: &str) -> Link {
        let mut parts = Vec::new();
        let mut rest = template.replace("{ui_url}", ui_url.trim_end_matches('/'));
        while let Some(i) = rest.find('{') {
            let (text, tail) = rest.split_at(i);
            let (part, len) = if tail.starts_with("{key}") {
                (Some(Part::Key), 5)
            } else if tail.starts_with("{timestamp}") {
                (Some(Part::Timestamp), 11)
            } else {
                (None, 1)
            };
            let mut literal = text.to_string();
            if part.is_none() {
                literal.push('{');
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal));
            }
            parts.extend(part);
            rest = tail[len..].to_string();
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest));
        }
        Link(parts)
    }

    fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(96);
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Key => percent_encode(crate::event::event_key(event), &mut out),
                Part::Timestamp => {
                    let ts = event.key.as_ref().and_then(|k| k.timestamp.as_ref());
                    out.push_str(&crate::event::nanos(ts).to_string());
                }
            }
        }
        out
    }
}

/// RFC 3986's unreserved characters as they are, the rest as `%XX`: a key
/// is CVP's text and must not end the path or add a query.
fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The UI's address from `source.cvp.address`: https, and the port only
/// when it is not 443.
pub fn default_ui_url(address: &str) -> String {
    let a = address.trim();
    let a = a
        .strip_prefix("https://")
        .or_else(|| a.strip_prefix("http://"))
        .unwrap_or(a)
        .trim_end_matches('/');
    let a = a.strip_suffix(":443").unwrap_or(a);
    format!("https://{a}")
}

impl Directory {
    pub fn new(cfg: &EnrichConfig, address: &str) -> Directory {
        let ui = cfg
            .ui_url
            .clone()
            .unwrap_or_else(|| default_ui_url(address));
        let m = metrics::get();
        m.enrichment_devices.set(0);
        m.enrichment_tag_assignments.set(0);
        for result in ["enriched", "device_unknown", "no_device"] {
            let _ = m
                .enrichment_events
                .get_or_create(&metrics::labels([("result", result)]));
        }
        for feed in [Feed::Inventory, Feed::Tags] {
            let l = metrics::labels([("source", feed.label())]);
            let _ = m.enrichment_changes.get_or_create(&l);
            let _ = m.enrichment_over_limit.get_or_create(&l);
        }
        Directory {
            store: RwLock::default(),
            inventory: cfg.inventory,
            max_devices: cfg.max_devices,
            max_tags: cfg.max_tag_assignments,
            link: (!cfg.link_template.is_empty()).then(|| Link::parse(&cfg.link_template, &ui)),
            warned: Default::default(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A panic while writing leaves plain maps, still consistent enough
        // to read: better than stopping every event.
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Devices held now.
    pub fn devices(&self) -> usize {
        self.read().devices.len()
    }

    /// The device as an event would carry it now.
    pub fn device(&self, id: &str) -> Option<Arc<Device>> {
        self.read().devices.get(id).map(|e| e.device.clone())
    }

    /// Tag assignments held now.
    pub fn tag_assignments(&self) -> usize {
        self.read().tag_count
    }

    /// The inventory's initial sync (`devices` whole): it replaces what
    /// the inventory said before (a device gone meanwhile keeps only its
    /// tags, if any).
    /// `over`: devices the subscription already left out.
    pub fn replace_inventory(&self, devices: Vec<Device>, over: usize) {
        let mut over = over;
        {
            let mut store = self.write();
            let fresh: std::collections::HashSet<&str> =
                devices.iter().map(|d| d.id.as_str()).collect();
            let gone: Vec<String> = store
                .devices
                .iter()
                .filter(|(id, e)| e.in_inventory && !fresh.contains(id.as_str()))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                store.forget_inventory(&id);
            }
            for d in devices {
                if !store.put_inventory(d, true, self.max_devices) {
                    over += 1;
                }
            }
            store.publish();
        }
        self.over_limit(Feed::Inventory, over);
    }

    /// A device added or changed after the initial sync: the fields it
    /// carries replace those held (CVP may send only what changed).
    pub fn update_device(&self, update: Device) {
        let fits = {
            let mut store = self.write();
            let fits = store.put_inventory(update, false, self.max_devices);
            store.publish();
            fits
        };
        self.changed(Feed::Inventory);
        self.over_limit(Feed::Inventory, usize::from(!fits));
    }

    /// A device the inventory no longer has.
    pub fn remove_device(&self, id: &str) {
        {
            let mut store = self.write();
            store.forget_inventory(id);
            store.publish();
        }
        self.changed(Feed::Inventory);
    }

    /// The tags' initial sync: every assignment held is replaced.
    /// `over`: assignments the subscription already left out.
    pub fn replace_tags(&self, assignments: Vec<Assignment>, over: usize) {
        let mut over = over;
        {
            let mut store = self.write();
            store.interfaces.clear();
            let tagged: Vec<String> = store
                .devices
                .iter()
                .filter(|(_, e)| !e.device.tags.is_empty())
                .map(|(id, _)| id.clone())
                .collect();
            for id in tagged {
                if let Some(e) = store.devices.get_mut(&id) {
                    let mut d = (*e.device).clone();
                    d.tags.clear();
                    e.device = Arc::new(d);
                }
                store.drop_if_empty(&id);
            }
            store.tag_count = 0;
            for a in assignments {
                if !store.assign(a, self.max_devices, self.max_tags) {
                    over += 1;
                }
            }
            store.publish();
        }
        self.over_limit(Feed::Tags, over);
    }

    /// A tag assigned after the initial sync.
    pub fn assign(&self, a: Assignment) {
        let fits = {
            let mut store = self.write();
            let fits = store.assign(a, self.max_devices, self.max_tags);
            store.publish();
            fits
        };
        self.changed(Feed::Tags);
        self.over_limit(Feed::Tags, usize::from(!fits));
    }

    /// A tag of the first initial sync, put in the store as it arrives;
    /// false when it does not fit (counted).
    pub fn assign_initial(&self, a: Assignment) -> bool {
        let fits = {
            let mut store = self.write();
            let fits = store.assign(a, self.max_devices, self.max_tags);
            if store.tag_count.is_multiple_of(1024) {
                store.publish();
            }
            fits
        };
        self.over_limit(Feed::Tags, usize::from(!fits));
        fits
    }

    /// Publishes the store's sizes to the metrics.
    pub fn publish(&self) {
        self.read().publish();
    }

    /// A tag assignment removed (label and value identify it).
    pub fn unassign(&self, a: &Assignment) {
        {
            let mut store = self.write();
            store.unassign(a);
            store.publish();
        }
        self.changed(Feed::Tags);
    }

    fn changed(&self, feed: Feed) {
        metrics::get()
            .enrichment_changes
            .get_or_create(&metrics::labels([("source", feed.label())]))
            .inc();
    }

    fn over_limit(&self, feed: Feed, n: usize) {
        if n == 0 {
            return;
        }
        metrics::get()
            .enrichment_over_limit
            .get_or_create(&metrics::labels([("source", feed.label())]))
            .inc_by(n as u64);
        let loud = {
            let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut w[feed as usize];
            let loud = slot.is_none_or(|t| t.elapsed().as_secs() >= 60);
            if loud {
                *slot = Some(Instant::now());
            }
            loud
        };
        if loud {
            tracing::warn!(
                "enrichment store full: {n} {} left out (source.cvp.enrich.max_devices is {}, max_tag_assignments {}); events naming them go on without them",
                match feed {
                    Feed::Inventory => "devices",
                    Feed::Tags => "tag assignments",
                },
                self.max_devices,
                self.max_tags
            );
        }
    }

    /// Joins each event with what the store knows of the devices and
    /// interfaces it names (components first, then `data`), and its link.
    /// One read lock for the batch; counted per batch.
    pub fn enrich(&self, events: &mut [SourceEvent]) {
        let mut counts = [0u64; 3];
        {
            let store = self.read();
            for ev in events.iter_mut() {
                let mut named = Named::default();
                named.collect(&ev.event);
                let mut devices = Vec::with_capacity(named.devices.len());
                let mut unknown = false;
                for id in &named.devices {
                    match store.devices.get(*id) {
                        Some(e) if e.in_inventory || !self.inventory => {
                            devices.push(e.device.clone())
                        }
                        _ => unknown = true,
                    }
                }
                let interfaces = named
                    .interfaces
                    .iter()
                    .map(|(d, i)| {
                        store
                            .interfaces
                            .get(*d)
                            .and_then(|v| find(v, i).ok().map(|at| v[at].clone()))
                            .unwrap_or_else(|| {
                                Arc::new(Interface {
                                    device_id: d.to_string(),
                                    interface_id: i.to_string(),
                                    tags: Vec::new(),
                                })
                            })
                    })
                    .collect();
                counts[if named.devices.is_empty() {
                    2
                } else if unknown {
                    1
                } else {
                    0
                }] += 1;
                ev.enrichment = Some(Arc::new(Enrichment {
                    devices,
                    interfaces,
                    link: self.link.as_ref().map(|l| l.render(&ev.event)),
                }));
            }
        }
        let m = metrics::get();
        for (result, n) in ["enriched", "device_unknown", "no_device"]
            .iter()
            .zip(counts)
        {
            if n > 0 {
                m.enrichment_events
                    .get_or_create(&metrics::labels([("result", result)]))
                    .inc_by(n);
            }
        }
    }
}

impl Store {
    /// Takes the inventory's record of a device, keeping its tags; `whole`:
    /// it replaces every field, else only those set. False when it is new
    /// and the store is full.
    fn put_inventory(&mut self, d: Device, whole: bool, max_devices: usize) -> bool {
        if let Some(e) = self.devices.get_mut(&d.id) {
            let tags = e.device.tags.clone();
            let new = if whole || !e.in_inventory {
                Device { tags, ..d }
            } else {
                merge(&e.device, d)
            };
            e.device = Arc::new(new);
            e.in_inventory = true;
            return true;
        }
        if self.devices.len() >= max_devices {
            return false;
        }
        self.devices.insert(
            d.id.clone(),
            Entry {
                device: Arc::new(Device {
                    tags: Vec::new(),
                    ..d
                }),
                in_inventory: true,
            },
        );
        true
    }

    /// The inventory no longer knows `id`: its tags stay, if any.
    fn forget_inventory(&mut self, id: &str) {
        if let Some(e) = self.devices.get_mut(id) {
            e.in_inventory = false;
            e.device = Arc::new(Device {
                id: id.to_string(),
                tags: e.device.tags.clone(),
                ..Default::default()
            });
        }
        self.drop_if_empty(id);
    }

    fn drop_if_empty(&mut self, id: &str) {
        if self
            .devices
            .get(id)
            .is_some_and(|e| !e.in_inventory && e.device.tags.is_empty())
        {
            self.devices.remove(id);
        }
    }

    /// False when it does not fit.
    fn assign(&mut self, a: Assignment, max_devices: usize, max_tags: usize) -> bool {
        if self.tag_count >= max_tags {
            return false;
        }
        match a.interface_id {
            None => {
                if !self.devices.contains_key(&a.device_id) {
                    if self.devices.len() >= max_devices {
                        return false;
                    }
                    self.devices.insert(
                        a.device_id.clone(),
                        Entry {
                            device: Arc::new(Device {
                                id: a.device_id.clone(),
                                ..Default::default()
                            }),
                            in_inventory: false,
                        },
                    );
                }
                let Some(entry) = self.devices.get_mut(&a.device_id) else {
                    return false;
                };
                if entry.device.tags.contains(&a.tag) {
                    return true;
                }
                let mut d = (*entry.device).clone();
                let new = insert_sorted(&mut d.tags, a.tag);
                d.tags.shrink_to_fit();
                entry.device = Arc::new(d);
                if !new {
                    return true;
                }
            }
            Some(intf) => {
                let on_device = self.interfaces.entry(a.device_id.clone()).or_default();
                let at = match find(on_device, &intf) {
                    Ok(at) => at,
                    Err(at) => {
                        on_device.insert(
                            at,
                            Arc::new(Interface {
                                device_id: a.device_id.clone(),
                                interface_id: intf,
                                tags: Vec::new(),
                            }),
                        );
                        at
                    }
                };
                let slot = &mut on_device[at];
                if slot.tags.contains(&a.tag) {
                    return true;
                }
                let mut i = (**slot).clone();
                let new = insert_sorted(&mut i.tags, a.tag);
                i.tags.shrink_to_fit();
                *slot = Arc::new(i);
                if !new {
                    return true;
                }
            }
        }
        self.tag_count += 1;
        true
    }

    fn unassign(&mut self, a: &Assignment) {
        let same = |t: &Tag| t.label == a.tag.label && t.value == a.tag.value;
        match &a.interface_id {
            None => {
                let Some(e) = self.devices.get_mut(&a.device_id) else {
                    return;
                };
                if !e.device.tags.iter().any(same) {
                    return;
                }
                let mut d = (*e.device).clone();
                d.tags.retain(|t| !same(t));
                e.device = Arc::new(d);
                self.drop_if_empty(&a.device_id);
            }
            Some(intf) => {
                let Some(on_device) = self.interfaces.get_mut(&a.device_id) else {
                    return;
                };
                let Ok(at) = find(on_device, intf) else {
                    return;
                };
                if !on_device[at].tags.iter().any(same) {
                    return;
                }
                let mut i = (*on_device[at]).clone();
                i.tags.retain(|t| !same(t));
                if i.tags.is_empty() {
                    on_device.remove(at);
                    if on_device.is_empty() {
                        self.interfaces.remove(&a.device_id);
                    }
                } else {
                    on_device[at] = Arc::new(i);
                }
            }
        }
        self.tag_count = self.tag_count.saturating_sub(1);
    }

    fn publish(&self) {
        let m = metrics::get();
        m.enrichment_devices.set(self.devices.len() as i64);
        m.enrichment_tag_assignments.set(self.tag_count as i64);
    }
}

/// Where interface `id` is in a device's sorted interfaces (or would go).
fn find(interfaces: &[Arc<Interface>], id: &str) -> Result<usize, usize> {
    interfaces.binary_search_by(|i| i.interface_id.as_str().cmp(id))
}

/// Tags in (label, value) order, so an event's are the same whatever order
/// CVP sent them in; a label and value already there are one assignment
/// (its creator updated): false then, so it is not counted twice.
fn insert_sorted(tags: &mut Vec<Tag>, tag: Tag) -> bool {
    match tags.binary_search_by(|t| (&t.label, &t.value).cmp(&(&tag.label, &tag.value))) {
        Ok(at) => {
            tags[at] = tag;
            false
        }
        Err(at) => {
            tags.insert(at, tag);
            true
        }
    }
}

/// `update`'s set fields over `old`'s.
fn merge(old: &Device, update: Device) -> Device {
    Device {
        id: update.id,
        hostname: update.hostname.or_else(|| old.hostname.clone()),
        fqdn: update.fqdn.or_else(|| old.fqdn.clone()),
        model: update.model.or_else(|| old.model.clone()),
        software_version: update
            .software_version
            .or_else(|| old.software_version.clone()),
        hardware_revision: update
            .hardware_revision
            .or_else(|| old.hardware_revision.clone()),
        system_mac_address: update
            .system_mac_address
            .or_else(|| old.system_mac_address.clone()),
        streaming: match update.streaming {
            Streaming::Unspecified => old.streaming,
            s => s,
        },
        tags: old.tags.clone(),
    }
}

/// The devices and interfaces an event names, each once, in the order
/// first named: components, then `data`, borrowed from the event.
#[derive(Default)]
struct Named<'a> {
    devices: Vec<&'a str>,
    interfaces: Vec<(&'a str, &'a str)>,
}

impl<'a> Named<'a> {
    fn collect(&mut self, event: &'a Event) {
        let components = event
            .components
            .iter()
            .flat_map(|c| c.components.iter())
            .map(|c| &c.components);
        for map in components.chain(event.data.iter().map(|d| &d.data)) {
            let Some(device) = map.get("deviceId").filter(|d| !d.is_empty()) else {
                continue;
            };
            if !self.devices.contains(&device.as_str()) {
                self.devices.push(device);
            }
            if let Some(intf) = map.get("interfaceId").filter(|i| !i.is_empty()) {
                let pair = (device.as_str(), intf.as_str());
                if !self.interfaces.contains(&pair) {
                    self.interfaces.push(pair);
                }
            }
        }
    }
}

/// What `tags.rs` makes of CVP's creator type.
pub fn creator(c: i32) -> Creator {
    match c {
        1 => Creator::System,
        2 => Creator::User,
        3 => Creator::External,
        _ => Creator::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;
    use cvp_proto::event::{EventComponent, EventComponents, EventData, EventKey};
    use std::collections::BTreeMap;

    fn cfg(max_devices: usize, max_tags: usize) -> EnrichConfig {
        EnrichConfig {
            tags: vec!["*".into()],
            max_devices,
            max_tag_assignments: max_tags,
            ..EnrichConfig::default()
        }
    }

    fn dev(id: &str, hostname: &str) -> Device {
        Device {
            id: id.into(),
            hostname: Some(hostname.into()),
            model: Some("DCS-7050".into()),
            streaming: Streaming::Active,
            ..Default::default()
        }
    }

    fn tag(device: &str, intf: Option<&str>, label: &str, value: &str) -> Assignment {
        Assignment {
            device_id: device.into(),
            interface_id: intf.map(str::to_string),
            tag: Tag {
                label: label.into(),
                value: value.into(),
                creator: Creator::User,
            },
        }
    }

    fn event(pairs: &[&[(&str, &str)]], data: &[(&str, &str)]) -> SourceEvent {
        let map = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        SourceEvent {
            event: Arc::new(Event {
                key: Some(EventKey {
                    key: Some("k/1 2".into()),
                    timestamp: Some(prost_types::Timestamp {
                        seconds: 7,
                        nanos: 5,
                    }),
                }),
                components: Some(EventComponents {
                    components: pairs
                        .iter()
                        .map(|p| EventComponent {
                            r#type: 1,
                            components: map(p),
                        })
                        .collect(),
                }),
                data: Some(EventData { data: map(data) }),
                ..Default::default()
            }),
            op: Op::Updated,
            seq: 0,
            enrichment: None,
        }
    }

    fn enriched(dir: &Directory, ev: SourceEvent) -> Arc<Enrichment> {
        let mut batch = vec![ev];
        dir.enrich(&mut batch);
        batch.remove(0).enrichment.expect("enriched")
    }

    /// Devices from components then data, each once; interfaces from the
    /// (deviceId, interfaceId) pairs; an unknown device left out; the link
    /// built from the address, the key percent-encoded.
    #[test]
    fn an_event_is_joined_with_what_it_names() {
        let dir = Directory::new(&cfg(10, 10), "cvp.example.com:443");
        dir.replace_inventory(vec![dev("A", "a1"), dev("B", "b1")], 0);
        dir.replace_tags(
            vec![
                tag("A", None, "site", "x"),
                tag("A", Some("Ethernet1"), "circuit", "c1"),
            ],
            0,
        );
        let e = enriched(
            &dir,
            event(
                &[
                    &[("deviceId", "A"), ("interfaceId", "Ethernet1")],
                    &[("deviceId", "Z")],
                ],
                &[("deviceId", "B"), ("interfaceId", "Ethernet2")],
            ),
        );
        let ids: Vec<&str> = e.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["A", "B"]);
        assert_eq!(e.devices[0].tags[0].value, "x");
        let intfs: Vec<(&str, &str, usize)> = e
            .interfaces
            .iter()
            .map(|i| (i.device_id.as_str(), i.interface_id.as_str(), i.tags.len()))
            .collect();
        assert_eq!(intfs, [("A", "Ethernet1", 1), ("B", "Ethernet2", 0)]);
        assert_eq!(
            e.link.as_deref(),
            Some("https://cvp.example.com/cv/events/k%2F1%202?timestamp=7000000005")
        );
    }

    /// A snapshot: an event keeps what it was given when a rename comes
    /// after it, and a partial update keeps the fields it does not carry.
    #[test]
    fn a_rename_applies_to_the_next_event_only() {
        let dir = Directory::new(&cfg(10, 10), "cvp:8443");
        dir.replace_inventory(vec![dev("A", "a1")], 0);
        let before = enriched(&dir, event(&[&[("deviceId", "A")]], &[]));
        dir.update_device(Device {
            id: "A".into(),
            hostname: Some("a2".into()),
            ..Default::default()
        });
        let after = enriched(&dir, event(&[&[("deviceId", "A")]], &[]));
        assert_eq!(before.devices[0].hostname.as_deref(), Some("a1"));
        assert_eq!(after.devices[0].hostname.as_deref(), Some("a2"));
        assert_eq!(after.devices[0].model.as_deref(), Some("DCS-7050"));
        assert_eq!(after.devices[0].streaming, Streaming::Active);
        assert!(after
            .link
            .as_deref()
            .unwrap()
            .starts_with("https://cvp:8443/"));
    }

    /// The same label and value again (another creator) is one assignment.
    #[test]
    fn an_assignment_is_counted_once() {
        let dir = Directory::new(&cfg(10, 10), "cvp");
        dir.assign(tag("A", None, "site", "x"));
        let mut again = tag("A", None, "site", "x");
        again.tag.creator = Creator::System;
        dir.assign(again);
        dir.assign(tag("A", Some("E1"), "c", "1"));
        dir.assign(tag("A", Some("E1"), "c", "1"));
        assert_eq!(dir.tag_assignments(), 2);
        assert_eq!(dir.device("A").unwrap().tags[0].creator, Creator::System);
        dir.unassign(&tag("A", None, "site", "x"));
        dir.unassign(&tag("A", Some("E1"), "c", "1"));
        assert_eq!(dir.tag_assignments(), 0);
        assert!(dir.device("A").is_none());
    }

    /// The bounds hold, and what is over them is left out, not an error.
    #[test]
    fn the_store_is_bounded() {
        let dir = Directory::new(&cfg(2, 3), "cvp");
        dir.replace_inventory(vec![dev("A", "a"), dev("B", "b"), dev("C", "c")], 0);
        assert_eq!(dir.devices(), 2);
        dir.update_device(dev("D", "d"));
        assert_eq!(dir.devices(), 2);
        for i in 0..5 {
            dir.assign(tag("A", Some(&format!("Ethernet{i}")), "c", "v"));
        }
        assert_eq!(dir.tag_assignments(), 3);
        // A tag on a third device would make it one too many.
        dir.unassign(&tag("A", Some("Ethernet0"), "c", "v"));
        dir.assign(tag("Q", None, "site", "x"));
        assert!(dir.device("Q").is_none());
        assert_eq!(dir.tag_assignments(), 2);
    }

    /// A re-sync replaces: a device gone while away is forgotten (kept for
    /// its tags when it has some), tags gone are removed, and without the
    /// inventory a tagged device is still joined.
    #[test]
    fn a_resync_replaces_what_the_store_had() {
        let dir = Directory::new(&cfg(10, 10), "cvp");
        dir.replace_inventory(vec![dev("A", "a"), dev("B", "b")], 0);
        dir.replace_tags(
            vec![tag("B", None, "site", "x"), tag("A", Some("E1"), "c", "1")],
            0,
        );
        dir.replace_inventory(vec![dev("A", "a")], 0);
        let b = dir.device("B").expect("kept for its tags");
        assert_eq!((b.hostname.clone(), b.tags.len()), (None, 1));
        // With the inventory on, B is not joined: the inventory does not know it.
        let e = enriched(&dir, event(&[&[("deviceId", "B")]], &[]));
        assert!(e.devices.is_empty());
        dir.replace_tags(vec![tag("A", None, "role", "leaf")], 0);
        assert!(dir.device("B").is_none());
        assert_eq!(dir.tag_assignments(), 1);
        let e = enriched(
            &dir,
            event(&[&[("deviceId", "A"), ("interfaceId", "E1")]], &[]),
        );
        assert_eq!(e.devices[0].tags.len(), 1);
        assert!(e.interfaces[0].tags.is_empty());

        let mut tags_only = cfg(10, 10);
        tags_only.inventory = false;
        let dir = Directory::new(&tags_only, "cvp");
        dir.assign(tag("B", None, "site", "x"));
        let e = enriched(&dir, event(&[&[("deviceId", "B")]], &[]));
        assert_eq!(e.devices.len(), 1);
    }

    #[test]
    fn the_ui_address_follows_the_configured_one() {
        assert_eq!(
            default_ui_url("cvp.example.com:443"),
            "https://cvp.example.com"
        );
        assert_eq!(default_ui_url("https://cvp:8443/"), "https://cvp:8443");
        assert_eq!(default_ui_url("[::1]:443"), "https://[::1]");
        let mut c = cfg(1, 1);
        c.ui_url = Some("https://proxy.example/cvp/".into());
        c.link_template = "{ui_url}/e/{key}/{unknown}".into();
        let dir = Directory::new(&c, "cvp");
        let e = enriched(&dir, event(&[], &[]));
        assert_eq!(
            e.link.as_deref(),
            Some("https://proxy.example/cvp/e/k%2F1%202/{unknown}")
        );
    }
}
