//! From CloudVision's protobuf event to the WIT `event` record: how a
//! [`SourceEvent`] describes itself to the transform engine.

use crate::event::{nanos, Op, SourceEvent};
use cvp_proto::event::ComponentType;
use cvp_transform_engine::{ChainEvent, WitComponent, WitEvent, WitOperation, WitSeverity};

impl ChainEvent for SourceEvent {
    fn to_wit(&self) -> WitEvent {
        to_wit(self)
    }

    fn key(&self) -> &str {
        SourceEvent::key(self)
    }
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
