//! The simulated CVP's inventory and tags: `arista.inventory.v1.DeviceService`
//! and `arista.tag.v2.TagAssignmentService`, with the devices the generated
//! events name (serial, hostname, model, EOS version) and their tags (`site`,
//! `role`, `pod`, a system `model` tag, `circuit-id` on uplinks), plus as many
//! synthetic devices and interface tags as asked (for memory tests), and
//! live changes: a rename, a tag assigned and removed.
//!
//! Like the event state (`state.rs`), one log of changes that subscribers
//! read by index, woken by a `watch` on its length: none is missed.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use cvp_proto::inventory::device_service_server::DeviceService;
use cvp_proto::inventory::{
    Device, DeviceKey, DeviceStreamRequest, DeviceStreamResponse, StreamingStatus,
};
use cvp_proto::tag::tag_assignment_service_server::TagAssignmentService;
use cvp_proto::tag::{
    CreatorType, ElementSubType, ElementType, TagAssignment, TagAssignmentKey,
    TagAssignmentStreamRequest, TagAssignmentStreamResponse,
};
use cvp_proto::Operation;
use futures::Stream;
use prost_types::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::generate::DEVICES;
use crate::stats::Counters;

/// A tag assignment's identity: device, interface ("" for a device tag),
/// label, value.
type TagId = (String, String, String, String);

enum Change {
    Device(Operation, Device),
    Tag(Operation, TagAssignment),
}

#[derive(Default)]
struct State {
    devices: BTreeMap<String, Device>,
    tags: BTreeMap<TagId, TagAssignment>,
    log: Vec<Arc<Change>>,
}

pub(crate) struct Inventory {
    state: Mutex<State>,
    len: watch::Sender<usize>,
    reset: watch::Sender<u64>,
    /// Live changes made so far by `churn`, to pick the next.
    churned: Mutex<u64>,
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// The model, role and site of one of the named devices, from its hostname
/// (`leaf1.dc1` → leaf, dc1).
fn profile(host: &str) -> (&'static str, String, String) {
    let (name, site) = host.split_once('.').unwrap_or((host, "lab"));
    let role: String = name
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let model = match role.as_str() {
        "spine" | "core" => "DCS-7280CR3-32P4",
        "border" | "edge" => "DCS-7280SR3-48YC8",
        _ => "DCS-7050SX3-48YC8",
    };
    (model, role, site.to_string())
}

pub(crate) fn device(serial: &str, hostname: &str, model: &str, n: usize) -> Device {
    let domain = hostname.split_once('.').map_or("", |(_, d)| d);
    Device {
        key: Some(DeviceKey {
            device_id: s(serial),
        }),
        software_version: s("4.30.2F"),
        model_name: s(model),
        hardware_revision: s("11.01"),
        fqdn: Some(format!("{hostname}.example.net")),
        hostname: s(hostname),
        domain_name: Some(if domain.is_empty() {
            "example.net".to_string()
        } else {
            format!("{domain}.example.net")
        }),
        system_mac_address: Some(format!(
            "00:1c:73:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )),
        boot_time: Some(Timestamp {
            seconds: 1_764_547_200,
            nanos: 0,
        }),
        streaming_status: StreamingStatus::Active as i32,
        extended_attributes: None,
    }
}

pub(crate) fn assignment(
    device: &str,
    interface: Option<&str>,
    label: &str,
    value: &str,
    creator: CreatorType,
) -> TagAssignment {
    TagAssignment {
        key: Some(TagAssignmentKey {
            workspace_id: s(""),
            element_type: if interface.is_some() {
                ElementType::Interface
            } else {
                ElementType::Device
            } as i32,
            label: s(label),
            value: s(value),
            device_id: s(device),
            interface_id: interface.map(str::to_string),
            element_sub_type: ElementSubType::Device as i32,
        }),
        tag_creator_type: creator as i32,
    }
}

fn tag_id(a: &TagAssignment) -> TagId {
    let k = a.key.clone().unwrap_or_default();
    (
        k.device_id.unwrap_or_default(),
        k.interface_id.unwrap_or_default(),
        k.label.unwrap_or_default(),
        k.value.unwrap_or_default(),
    )
}

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Inventory {
    /// The named devices and their tags, and `extra_devices` synthetic
    /// ones (`SIM0000001`, ...) carrying `extra_interface_tags` interface
    /// tags between them.
    pub fn new(extra_devices: usize, extra_interface_tags: usize) -> Inventory {
        let mut st = State::default();
        for (n, (serial, host)) in DEVICES.iter().enumerate() {
            let (model, role, site) = profile(host);
            st.devices
                .insert(serial.to_string(), device(serial, host, model, n));
            let mut tags = vec![
                assignment(serial, None, "site", &site, CreatorType::User),
                assignment(serial, None, "role", &role, CreatorType::User),
                assignment(serial, None, "pod", "pod1", CreatorType::User),
                assignment(serial, None, "model", model, CreatorType::System),
            ];
            for port in 49..=52 {
                let intf = format!("Ethernet{port}/1");
                tags.push(assignment(
                    serial,
                    Some(&intf),
                    "circuit-id",
                    &format!("C-{serial}-{port}"),
                    CreatorType::User,
                ));
            }
            for t in tags {
                st.tags.insert(tag_id(&t), t);
            }
        }
        for i in 0..extra_devices {
            let serial = format!("SIM{i:07}");
            let host = format!("leaf{i}.sim");
            st.devices.insert(
                serial.clone(),
                device(&serial, &host, "DCS-7050SX3-48YC8", DEVICES.len() + i),
            );
        }
        if extra_devices > 0 {
            for j in 0..extra_interface_tags {
                let serial = format!("SIM{:07}", j % extra_devices);
                let intf = format!("Ethernet{}", 1 + j / extra_devices);
                let t = assignment(
                    &serial,
                    Some(&intf),
                    "circuit-id",
                    &format!("C-{j:08}"),
                    CreatorType::User,
                );
                st.tags.insert(tag_id(&t), t);
            }
        }
        Inventory {
            state: Mutex::new(st),
            len: watch::channel(0).0,
            reset: watch::channel(0).0,
            churned: Mutex::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, change: Change) {
        let len = {
            let mut st = self.lock();
            match &change {
                Change::Device(op, d) => {
                    let id = d
                        .key
                        .as_ref()
                        .and_then(|k| k.device_id.clone())
                        .unwrap_or_default();
                    if *op == Operation::Deleted {
                        st.devices.remove(&id);
                    } else {
                        let merged = match st.devices.get(&id) {
                            Some(old) => merge(old, d),
                            None => d.clone(),
                        };
                        st.devices.insert(id, merged);
                    }
                }
                Change::Tag(op, a) => {
                    if *op == Operation::Deleted {
                        st.tags.remove(&tag_id(a));
                    } else {
                        st.tags.insert(tag_id(a), a.clone());
                    }
                }
            }
            st.log.push(Arc::new(change));
            st.log.len()
        };
        self.len.send_replace(len);
    }

    /// Renames a device, as CVP streams it: only the changed fields.
    pub fn rename(&self, serial: &str, hostname: &str) {
        let d = Device {
            key: Some(DeviceKey {
                device_id: s(serial),
            }),
            hostname: s(hostname),
            fqdn: Some(format!("{hostname}.example.net")),
            ..Default::default()
        };
        self.append(Change::Device(Operation::Updated, d));
    }

    pub fn set_device(&self, d: Device) {
        self.append(Change::Device(Operation::Updated, d));
    }

    pub fn remove_device(&self, serial: &str) {
        let d = Device {
            key: Some(DeviceKey {
                device_id: s(serial),
            }),
            ..Default::default()
        };
        self.append(Change::Device(Operation::Deleted, d));
    }

    pub fn assign(&self, a: TagAssignment) {
        self.append(Change::Tag(Operation::Updated, a));
    }

    /// A removal carries the key only, as on CVP.
    pub fn unassign(&self, mut a: TagAssignment) {
        a.tag_creator_type = 0;
        self.append(Change::Tag(Operation::Deleted, a));
    }

    /// Ends the open DeviceService and TagAssignmentService streams with
    /// UNAVAILABLE.
    pub fn reset_streams(&self) {
        self.reset.send_modify(|g| *g += 1);
    }

    /// The feed's inventory churn, one step at a time, in a cycle: leaf1.dc1
    /// renamed, a `maintenance` tag assigned to it, the tag removed, the
    /// old name back.
    pub fn churn(&self) {
        let step = {
            let mut n = self.churned.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n % 4
        };
        let (serial, host) = DEVICES[0];
        let tag = || assignment(serial, None, "maintenance", "yes", CreatorType::User);
        match step {
            1 => self.rename(serial, &format!("{}-renamed", host)),
            2 => self.assign(tag()),
            3 => self.unassign(tag()),
            _ => self.rename(serial, host),
        }
    }
}

/// `update`'s set fields over `old`'s.
fn merge(old: &Device, update: &Device) -> Device {
    let pick = |new: &Option<String>, old: &Option<String>| new.clone().or_else(|| old.clone());
    Device {
        key: old.key.clone(),
        software_version: pick(&update.software_version, &old.software_version),
        model_name: pick(&update.model_name, &old.model_name),
        hardware_revision: pick(&update.hardware_revision, &old.hardware_revision),
        fqdn: pick(&update.fqdn, &old.fqdn),
        hostname: pick(&update.hostname, &old.hostname),
        domain_name: pick(&update.domain_name, &old.domain_name),
        system_mac_address: pick(&update.system_mac_address, &old.system_mac_address),
        boot_time: update.boot_time.or(old.boot_time),
        streaming_status: if update.streaming_status != 0 {
            update.streaming_status
        } else {
            old.streaming_status
        },
        extended_attributes: update
            .extended_attributes
            .clone()
            .or_else(|| old.extended_attributes.clone()),
    }
}

/// The gRPC services over one [`Inventory`].
#[derive(Clone)]
pub(crate) struct InventoryService {
    pub inventory: Arc<Inventory>,
    pub counters: Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
}

type Out<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send + 'static>>;

impl InventoryService {
    /// The state (`snapshot` picks it under the lock), INITIAL_SYNC_COMPLETE
    /// (`sync`), then every later change `pick` takes, until a reset, the
    /// client leaves or the simulator stops.
    fn follow<R: Send + 'static>(
        &self,
        snapshot: impl FnOnce(&State) -> Vec<R>,
        pick: fn(&Change) -> Option<R>,
        sync: R,
    ) -> Out<R> {
        let inv = self.inventory.clone();
        let mut len_rx = inv.len.subscribe();
        let mut reset_rx = inv.reset.subscribe();
        reset_rx.borrow_and_update();
        let (initial, mut idx) = {
            let st = inv.lock();
            (snapshot(&st), st.log.len())
        };
        let (tx, rx) = mpsc::channel::<Result<R, Status>>(256);
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return Box::pin(futures::stream::empty());
        }
        tokio::spawn(async move {
            for r in initial.into_iter().chain(std::iter::once(sync)) {
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
            loop {
                len_rx.borrow_and_update();
                let batch: Vec<R> = {
                    let st = inv.lock();
                    let out = st.log[idx.min(st.log.len())..]
                        .iter()
                        .filter_map(|c| pick(c))
                        .collect();
                    idx = st.log.len();
                    out
                };
                if reset_rx.has_changed().unwrap_or(false) {
                    let _ = tx
                        .send(Err(Status::unavailable("simulated stream reset")))
                        .await;
                    return;
                }
                for r in batch {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
                let reset = tokio::select! {
                    r = len_rx.changed() => if r.is_err() { return } else { false },
                    _ = reset_rx.changed() => true,
                    _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                };
                if reset {
                    let _ = tx
                        .send(Err(Status::unavailable("simulated stream reset")))
                        .await;
                    return;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl DeviceService for InventoryService {
    async fn subscribe(
        &self,
        request: Request<DeviceStreamRequest>,
    ) -> Result<Response<Out<DeviceStreamResponse>>, Status> {
        if request.get_ref().time.is_some() {
            return Err(Status::invalid_argument(
                "Subscribe does not take time bounds",
            ));
        }
        Counters::inc(&self.counters.device_subscribes);
        info!("DeviceService/Subscribe");
        let t = now();
        Ok(Response::new(self.follow(
            |st| {
                st.devices
                    .values()
                    .map(|d| DeviceStreamResponse {
                        value: Some(d.clone()),
                        time: Some(t),
                        r#type: Operation::Initial as i32,
                    })
                    .collect()
            },
            |c| match c {
                Change::Device(op, d) => Some(DeviceStreamResponse {
                    value: Some(d.clone()),
                    time: Some(now()),
                    r#type: *op as i32,
                }),
                Change::Tag(..) => None,
            },
            DeviceStreamResponse {
                r#type: Operation::InitialSyncComplete as i32,
                ..Default::default()
            },
        )))
    }
}

/// Whether `a` matches one of the filters' workspace ids (the only field
/// cvp-stream filters on); no filter matches everything.
fn in_workspace(filters: &[TagAssignment], a: &TagAssignment) -> bool {
    let ws = |t: &TagAssignment| t.key.as_ref().and_then(|k| k.workspace_id.clone());
    filters.is_empty() || filters.iter().any(|f| ws(f).is_none() || ws(f) == ws(a))
}

#[tonic::async_trait]
impl TagAssignmentService for InventoryService {
    async fn subscribe(
        &self,
        request: Request<TagAssignmentStreamRequest>,
    ) -> Result<Response<Out<TagAssignmentStreamResponse>>, Status> {
        let req = request.into_inner();
        if req.time.is_some() {
            return Err(Status::invalid_argument(
                "Subscribe does not take time bounds",
            ));
        }
        Counters::inc(&self.counters.tag_subscribes);
        info!("TagAssignmentService/Subscribe");
        let t = now();
        let filters = req.partial_eq_filter;
        // Every assignment of the simulator is in the mainline: a filter
        // for another workspace matches none.
        let mainline = in_workspace(&filters, &assignment("", None, "", "", CreatorType::User));
        Ok(Response::new(self.follow(
            move |st| {
                if !mainline {
                    return Vec::new();
                }
                st.tags
                    .values()
                    .map(|a| TagAssignmentStreamResponse {
                        value: Some(a.clone()),
                        time: Some(t),
                        r#type: Operation::Initial as i32,
                    })
                    .collect()
            },
            |c| match c {
                Change::Tag(op, a) => Some(TagAssignmentStreamResponse {
                    value: Some(a.clone()),
                    time: Some(now()),
                    r#type: *op as i32,
                }),
                Change::Device(..) => None,
            },
            TagAssignmentStreamResponse {
                r#type: Operation::InitialSyncComplete as i32,
                ..Default::default()
            },
        )))
    }
}
