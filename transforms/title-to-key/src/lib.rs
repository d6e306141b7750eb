//! key = event title, value = event description, both as the UTF-8 bytes
//! given; topic and headers are left as they came. It reads the title and
//! the description only, so the host hands over nothing else and never
//! builds the default JSON value.

use cvp_transform_sdk::{export_transform, Config, Event, Output, Patch, Record, Transform};

struct TitleToKey;

impl Transform for TitleToKey {
    fn new(_config: &Config) -> Result<Self, String> {
        Ok(TitleToKey)
    }

    fn reads(&self) -> Vec<String> {
        cvp_transform_sdk::fields(&["title", "description"])
    }

    fn transform(&mut self, event: &Event, _record: &Record) -> Result<Output, String> {
        // Set even when empty: an empty title is still a key, and an empty
        // value must not become a tombstone.
        Ok(Output::one(
            Patch::new()
                .key(event.title().unwrap_or_default())
                .value(event.description().unwrap_or_default()),
        ))
    }
}

export_transform!(TitleToKey);
