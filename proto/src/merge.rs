//! How a CVP UPDATED message, which may be a partial diff, applies to the
//! last full state of its event. One definition for the host (which merges
//! to hand transforms whole events) and the simulator (which keeps state).

use crate::event::Event;

/// Merges `diff` into `full`: fields the diff sets replace ours; `data`,
/// `notes` and `metadata` groups are upserted entry by entry; the component
/// list is replaced when the diff carries a non-empty one (protobuf's own
/// merge would append to it and duplicate components).
pub fn merge_event(full: &mut Event, diff: Event) {
    if diff.key.is_some() {
        full.key = diff.key;
    }
    if diff.severity != 0 {
        full.severity = diff.severity;
    }
    macro_rules! replace {
        ($($f:ident),*) => { $( if diff.$f.is_some() { full.$f = diff.$f; } )* };
    }
    replace!(
        title,
        description,
        event_type,
        rule_id,
        ack,
        read,
        last_updated_time,
        delete_time,
        metadata
    );
    if let Some(d) = diff.data {
        full.data
            .get_or_insert_with(Default::default)
            .data
            .extend(d.data);
    }
    if let Some(n) = diff.notes {
        full.notes
            .get_or_insert_with(Default::default)
            .notes
            .extend(n.notes);
    }
    if let Some(c) = diff.components {
        if !c.components.is_empty() || full.components.is_none() {
            full.components = Some(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventComponent, EventComponents, EventData, EventKey};

    #[test]
    fn set_fields_replace_maps_upsert_components_replace() {
        let mut full = Event {
            key: Some(EventKey {
                key: Some("k".into()),
                timestamp: None,
            }),
            severity: 2,
            title: Some("T".into()),
            description: Some("old".into()),
            data: Some(EventData {
                data: [("a".into(), "1".into()), ("b".into(), "2".into())].into(),
            }),
            components: Some(EventComponents {
                components: vec![EventComponent::default()],
            }),
            ..Default::default()
        };
        merge_event(
            &mut full,
            Event {
                description: Some("new".into()),
                data: Some(EventData {
                    data: [("b".into(), "3".into())].into(),
                }),
                components: Some(EventComponents { components: vec![] }),
                ..Default::default()
            },
        );
        assert_eq!(full.title.as_deref(), Some("T"));
        assert_eq!(full.description.as_deref(), Some("new"));
        assert_eq!(full.severity, 2);
        let data = &full.data.as_ref().unwrap().data;
        assert_eq!((data["a"].as_str(), data["b"].as_str()), ("1", "3"));
        assert_eq!(full.components.unwrap().components.len(), 1);
    }
}
