//! The stock transform (key = event title, value = event description) as
//! the previous release built it, against contract 0.1 (`sdk-0.1`): the
//! host must still run it, and the bench compares it with the 0.2 one.

use cvp_transform_sdk_01::{export_transform, Config, Event, KafkaRecord, Transform};

struct TitleToKey;

impl Transform for TitleToKey {
    fn new(_config: &Config) -> Result<Self, String> {
        Ok(TitleToKey)
    }

    fn transform(
        &mut self,
        event: &Event,
        mut record: KafkaRecord,
    ) -> Result<Vec<KafkaRecord>, String> {
        // `Some` even when empty: an empty title is still a key, and an empty
        // value must not become a tombstone.
        record.key = Some(event.title.as_bytes().to_vec());
        record.value = Some(event.description.as_bytes().to_vec());
        Ok(vec![record])
    }
}

export_transform!(TitleToKey);
