//! Picks the topic by event type and tags the record with headers saying
//! what the event is, so consumers can filter without parsing the value.

use std::collections::BTreeMap;

use cvp_transform_sdk::{export_transform, Config, Event, Header, KafkaRecord, Transform};

struct RouteByType {
    routes: BTreeMap<String, String>,
    default_topic: Option<String>,
}

impl Transform for RouteByType {
    fn new(config: &Config) -> Result<Self, String> {
        let routes: BTreeMap<String, String> = config
            .get_json("routes")
            .map_err(|e| format!("{e} (expected a map of event type to topic)"))?
            .unwrap_or_default();
        Ok(RouteByType {
            routes,
            default_topic: config.get("default_topic").map(str::to_owned),
        })
    }

    fn transform(
        &mut self,
        event: &Event,
        mut record: KafkaRecord,
    ) -> Result<Vec<KafkaRecord>, String> {
        if let Some(topic) = self
            .routes
            .get(&event.event_type)
            .or(self.default_topic.as_ref())
        {
            record.topic.clone_from(topic);
        }
        record.headers.extend([
            Header::text("cvp-event-type", &event.event_type),
            Header::text("cvp-severity", event.severity.as_str()),
            Header::text("cvp-event-key", &event.key),
        ]);
        Ok(vec![record])
    }
}

export_transform!(RouteByType);
