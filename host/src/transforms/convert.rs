//! From CloudVision's protobuf event to the WIT `event` record: how a
//! [`SourceEvent`] describes itself to the transform engine, as contract
//! 0.2 sees it (borrowed, only the fields a transform reads: [`view`]) and
//! as 0.1 does (every field, owned: [`to_wit`]).

use crate::enrichment::{Creator, Device, Interface, Streaming, Tag};
use crate::event::{nanos, Op, SourceEvent};
use cvp_proto::event::{ComponentType, Event};
use cvp_transform_engine::{
    ChainEvent, ComponentView, DataReads, DeviceView, EventView, InterfaceView, Operation02, Reads,
    Severity02, StreamingStatus, TagCreator, TagView, WitComponent, WitEvent, WitOperation,
    WitSeverity,
};

impl ChainEvent for SourceEvent {
    fn to_wit(&self) -> WitEvent {
        to_wit(self)
    }

    fn view(&self, reads: &Reads) -> EventView<'_> {
        view(self, reads)
    }

    fn key(&self) -> &str {
        SourceEvent::key(self)
    }

    fn default_value(&self) -> Option<Vec<u8>> {
        // The event as JSON, with its `enrichment` object when joined.
        Some(crate::enrichment::default_value(self))
    }
}

/// The event as a 0.2 transform that declared `reads` receives it: the
/// strings borrowed from the merged event (lowered into the guest from
/// here, never copied on the host), the undeclared fields `None`.
pub fn view<'a>(src: &'a SourceEvent, reads: &Reads) -> EventView<'a> {
    let ev: &'a Event = &src.event;
    let key = ev.key.as_ref();
    let text = |wanted: bool, s: &'a Option<String>| if wanted { s.as_deref() } else { None };
    let enrichment = src.enrichment.as_deref();
    EventView {
        key: src.key(),
        timestamp: nanos(key.and_then(|k| k.timestamp.as_ref())),
        operation: match src.op {
            Op::Initial => Operation02::Initial,
            Op::Updated => Operation02::Updated,
            Op::Deleted => Operation02::Deleted,
        },
        severity: match ev.severity {
            1 => Severity02::Info,
            2 => Severity02::Warning,
            3 => Severity02::Error,
            4 => Severity02::Critical,
            5 => Severity02::Debug,
            _ => Severity02::Unspecified,
        },
        severity_code: ev.severity,
        last_updated_time: nanos(ev.last_updated_time.as_ref()),
        delete_time: nanos(ev.delete_time.as_ref()),
        title: text(reads.title, &ev.title),
        description: text(reads.description, &ev.description),
        event_type: text(reads.event_type, &ev.event_type),
        rule_id: text(reads.rule_id, &ev.rule_id),
        data: ev
            .data
            .as_ref()
            .filter(|_| reads.data != DataReads::None)
            .and_then(|d| {
                let fields: Vec<(&str, &str)> = d
                    .data
                    .iter()
                    .filter(|(k, _)| reads.data.wants(k))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                (!fields.is_empty()).then_some(fields)
            }),
        components: if reads.components {
            ev.components.as_ref().map(|c| {
                c.components
                    .iter()
                    .map(|c| ComponentView {
                        kind: ComponentType::try_from(c.r#type)
                            .map(|t| t.as_str_name())
                            .unwrap_or("COMPONENT_TYPE_UNSPECIFIED"),
                        fields: c
                            .components
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect(),
                    })
                    .collect()
            })
        } else {
            None
        },
        metadata: if reads.metadata {
            ev.metadata.as_ref().map(|m| {
                m.values
                    .iter()
                    .map(|g| {
                        g.values
                            .as_ref()
                            .map(|v| {
                                v.values
                                    .iter()
                                    .map(|(k, v)| (k.as_str(), v.as_str()))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
        } else {
            None
        },
        json: reads
            .json
            .then(|| cvp_proto::json::event_to_json(&src.event)),
        devices: (reads.devices)
            .then(|| enrichment.map(|e| e.devices.iter().map(|d| device(d)).collect()))
            .flatten(),
        interfaces: (reads.interfaces)
            .then(|| enrichment.map(|e| e.interfaces.iter().map(|i| interface(i)).collect()))
            .flatten(),
        link: (reads.link)
            .then(|| enrichment.and_then(|e| e.link.as_deref()))
            .flatten(),
    }
}

fn device(d: &Device) -> DeviceView<'_> {
    DeviceView {
        id: &d.id,
        hostname: d.hostname.as_deref(),
        fqdn: d.fqdn.as_deref(),
        model: d.model.as_deref(),
        software_version: d.software_version.as_deref(),
        hardware_revision: d.hardware_revision.as_deref(),
        system_mac_address: d.system_mac_address.as_deref(),
        streaming_status: match d.streaming {
            Streaming::Unspecified => StreamingStatus::Unspecified,
            Streaming::Inactive => StreamingStatus::Inactive,
            Streaming::Active => StreamingStatus::Active,
        },
        tags: tags(&d.tags),
    }
}

fn interface(i: &Interface) -> InterfaceView<'_> {
    InterfaceView {
        device_id: &i.device_id,
        interface_id: &i.interface_id,
        tags: tags(&i.tags),
    }
}

fn tags(tags: &[Tag]) -> Vec<TagView<'_>> {
    tags.iter()
        .map(|t| TagView {
            label: &t.label,
            value: &t.value,
            creator: match t.creator {
                Creator::Unspecified => TagCreator::Unspecified,
                Creator::System => TagCreator::System,
                Creator::User => TagCreator::User,
                Creator::External => TagCreator::External,
            },
        })
        .collect()
}

pub fn to_wit(src: &SourceEvent) -> WitEvent {
    let ev = &src.event;
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let key = ev.key.as_ref();
    WitEvent {
        key: key.and_then(|k| k.key.clone()).unwrap_or_default(),
        timestamp: nanos(key.and_then(|k| k.timestamp.as_ref())),
        operation: match src.op {
            Op::Initial => WitOperation::Initial,
            Op::Updated => WitOperation::Updated,
            Op::Deleted => WitOperation::Deleted,
        },
        severity: match ev.severity {
            1 => WitSeverity::Info,
            2 => WitSeverity::Warning,
            3 => WitSeverity::Error,
            4 => WitSeverity::Critical,
            5 => WitSeverity::Debug,
            _ => WitSeverity::Unspecified,
        },
        severity_code: ev.severity,
        title: text(&ev.title),
        description: text(&ev.description),
        event_type: text(&ev.event_type),
        rule_id: text(&ev.rule_id),
        data: ev
            .data
            .as_ref()
            .map(|d| d.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        components: ev
            .components
            .as_ref()
            .map(|c| {
                c.components
                    .iter()
                    .map(|c| WitComponent {
                        kind: ComponentType::try_from(c.r#type)
                            .map(|t| t.as_str_name().to_string())
                            .unwrap_or_else(|_| c.r#type.to_string()),
                        fields: c
                            .components
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        last_updated_time: nanos(ev.last_updated_time.as_ref()),
        delete_time: nanos(ev.delete_time.as_ref()),
        metadata: ev
            .metadata
            .as_ref()
            .map(|m| {
                m.values
                    .iter()
                    .map(|g| {
                        g.values
                            .as_ref()
                            .map(|v| {
                                v.values
                                    .iter()
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
