//! Picks the topic by event type and tags the record with headers saying
//! what the event is, so consumers can filter without parsing the value.

use std::collections::BTreeMap;

use cvp_transform_sdk::{export_transform, Config, Event, Output, Patch, Record, Transform};

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

    fn reads(&self) -> Vec<String> {
        cvp_transform_sdk::fields(&["event-type"])
    }

    fn transform(&mut self, event: &Event, _record: &Record) -> Result<Output, String> {
        let event_type = event.event_type().unwrap_or_default();
        let mut patch = Patch::new();
        if let Some(topic) = self.routes.get(event_type).or(self.default_topic.as_ref()) {
            patch = patch.topic(topic);
        }
        Ok(Output::one(
            patch
                .header("cvp-event-type", event_type)
                .header("cvp-severity", event.severity().as_str())
                .header("cvp-event-key", event.key()),
        ))
    }
}

export_transform!(RouteByType);
