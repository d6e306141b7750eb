//! `arista.inventory.v1.DeviceService/Subscribe`: each device's hostname,
//! FQDN, model, software version, hardware revision, system MAC and
//! streaming status, kept live in the store (`directory.rs`), so a rename
//! or an upgrade applies to the next event. The loop is `resource.rs`.

use super::directory::Directory;
use super::resource::Resource;
use crate::enrichment::{Device, Streaming};
use cvp_proto::inventory::{self as inv, DeviceStreamRequest, DeviceStreamResponse};
use cvp_proto::Operation;
use std::collections::HashMap;

pub(super) struct Inventory {
    /// The initial state so far, by device id (a device sent twice counts
    /// once); at most `max` devices, the rest counted by the store.
    staged: HashMap<String, Device>,
    max: usize,
    over: usize,
}

impl Inventory {
    pub fn new(max_devices: usize) -> Inventory {
        Inventory {
            staged: HashMap::new(),
            max: max_devices,
            over: 0,
        }
    }
}

/// CVP's device, as the store keeps it; `None` without a device id.
pub(super) fn device(d: inv::Device) -> Option<Device> {
    let id = d
        .key
        .and_then(|k| k.device_id)
        .filter(|id| !id.is_empty())?;
    Some(Device {
        id,
        hostname: d.hostname,
        fqdn: d.fqdn,
        model: d.model_name,
        software_version: d.software_version,
        hardware_revision: d.hardware_revision,
        system_mac_address: d.system_mac_address,
        streaming: match inv::StreamingStatus::try_from(d.streaming_status) {
            Ok(inv::StreamingStatus::Active) => Streaming::Active,
            Ok(inv::StreamingStatus::Inactive) => Streaming::Inactive,
            _ => Streaming::Unspecified,
        },
        tags: Vec::new(),
    })
}

impl Resource for Inventory {
    const NAME: &'static str = "inventory";
    const SERVICE: &'static str = "arista.inventory.v1.DeviceService";
    const PATH: &'static str = "/arista.inventory.v1.DeviceService/Subscribe";
    type Request = DeviceStreamRequest;
    type Response = DeviceStreamResponse;

    fn request(&self) -> DeviceStreamRequest {
        DeviceStreamRequest::default()
    }

    fn operation(resp: &DeviceStreamResponse) -> i32 {
        resp.r#type
    }

    fn begin(&mut self) {
        // What a broken-off sync staged is not CVP's state any more.
        self.staged.clear();
        self.over = 0;
    }

    fn stage(&mut self, resp: DeviceStreamResponse, _dir: &Directory) {
        let Some(d) = resp.value.and_then(device) else {
            return;
        };
        if self.staged.len() >= self.max && !self.staged.contains_key(&d.id) {
            self.over += 1;
            return;
        }
        self.staged.insert(d.id.clone(), d);
    }

    fn synced(&mut self, dir: &Directory) -> usize {
        let devices: Vec<Device> = std::mem::take(&mut self.staged).into_values().collect();
        let n = devices.len();
        dir.replace_inventory(devices, std::mem::take(&mut self.over));
        n
    }

    fn apply(&mut self, resp: DeviceStreamResponse, dir: &Directory) {
        let deleted = resp.r#type == Operation::Deleted as i32;
        let Some(d) = resp.value.and_then(device) else {
            return;
        };
        if deleted {
            dir.remove_device(&d.id);
        } else {
            dir.update_device(d);
        }
    }
}
