//! Deterministic generation of realistic CVP events, modelled on the events
//! CloudVision raises (see the sample file): interface utilisation over
//! threshold, BGP session down, high CPU, device stopped streaming, link down.

use std::collections::BTreeMap;
use std::sync::Arc;

use cvp_proto::event::{
    ComponentType, Event, EventComponent, EventComponents, EventData, EventKey, EventSeverity,
};
use cvp_proto::Operation;
use prost_types::Timestamp;

use crate::state::{key_id, Change};

/// 2026-01-01T00:00:00Z: generated timestamps start here and only go up.
const BASE_SECONDS: i64 = 1_767_225_600;

/// SplitMix64: tiny, fast and stable across dependency upgrades, so a seed
/// keeps producing the same events forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The devices events name: serial number and hostname (the inventory,
/// `inventory.rs`, knows them by these).
pub(crate) const DEVICES: &[(&str, &str)] = &[
    ("JPE19181520", "leaf1.dc1"),
    ("JPE19181521", "leaf2.dc1"),
    ("SSJ17371234", "spine1.dc1"),
    ("SSJ17371235", "spine2.dc1"),
    ("JPE20224411", "border1.dc1"),
    ("HSH14415002", "leaf1.dc2"),
    ("HSH14415003", "leaf2.dc2"),
    ("JAS18100421", "spine1.dc2"),
    ("JAS18100422", "core1.wan"),
    ("FGN22050017", "edge1.branch7"),
];

#[derive(Clone, Copy)]
enum Template {
    IntfOutUtil,
    IntfInUtil,
    BgpDown,
    HighCpu,
    StoppedStreaming,
    LinkDown,
}

const TEMPLATES: &[Template] = &[
    Template::IntfOutUtil,
    Template::IntfInUtil,
    Template::BgpDown,
    Template::HighCpu,
    Template::StoppedStreaming,
    Template::LinkDown,
];

struct Alive {
    template: Template,
    event: Arc<Event>,
}

pub(crate) struct Generator {
    rng: Rng,
    /// Milliseconds since `BASE_SECONDS` of the last generated change.
    now_ms: i64,
    alive: Vec<Alive>,
    partial_updates: bool,
    /// Stamp changes with the wall clock instead of the simulated one, so a
    /// receiver can measure how long an event took to reach it.
    wall_clock: bool,
}

fn ts(ms: i64) -> Timestamp {
    Timestamp {
        seconds: BASE_SECONDS + ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn map(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl Generator {
    pub fn new(seed: u64, partial_updates: bool) -> Self {
        Generator {
            rng: Rng(seed),
            now_ms: 0,
            alive: Vec::new(),
            partial_updates,
            wall_clock: false,
        }
    }

    /// See [`crate::SimOptions::wall_clock`].
    pub fn with_wall_clock(mut self, on: bool) -> Self {
        self.wall_clock = on;
        self
    }

    /// The time of the change being generated.
    fn stamp(&self) -> Timestamp {
        if !self.wall_clock {
            return ts(self.now_ms);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }
    }

    /// The change creating one starting-state event; timestamps advance by up
    /// to two minutes so the starting state spans a realistic period.
    pub fn initial(&mut self) -> Change {
        self.now_ms += 1 + self.rng.below(120_000) as i64;
        self.create()
    }

    /// The next live change: about 60% new events, 30% changes, 10% deletes.
    pub fn live(&mut self) -> Change {
        self.now_ms += 1 + self.rng.below(2_000) as i64;
        let roll = self.rng.below(100);
        if self.alive.is_empty() || roll < 60 {
            self.create()
        } else if roll < 90 {
            self.change()
        } else {
            self.delete()
        }
    }

    fn create(&mut self) -> Change {
        let template = *self.rng.pick(TEMPLATES);
        let now = self.stamp();
        let key = EventKey {
            key: Some(format!("{:016x}", self.rng.next())),
            timestamp: Some(now),
        };
        let (device, host) = *self.rng.pick(DEVICES);
        let mut ev = Event {
            key: Some(key),
            last_updated_time: Some(now),
            ..Default::default()
        };
        let intf = self.interface();
        let component = |t: ComponentType, pairs: &[(&str, String)]| {
            Some(EventComponents {
                components: vec![EventComponent {
                    r#type: t as i32,
                    components: map(pairs),
                }],
            })
        };
        let device_only = component(ComponentType::Device, &[("deviceId", device.into())]);
        let mut data = match template {
            Template::IntfOutUtil | Template::IntfInUtil => {
                let (kind, title) = match template {
                    Template::IntfOutUtil => ("HIGH_INTF_OUT_UTIL", "Outbound"),
                    _ => ("HIGH_INTF_IN_UTIL", "Inbound"),
                };
                let severe = self.rng.below(3) == 0;
                ev.severity = if severe {
                    EventSeverity::Error
                } else {
                    EventSeverity::Warning
                } as i32;
                ev.title = Some(format!("Interface Exceeded {title} Utilization Threshold"));
                ev.event_type = s(kind);
                ev.rule_id = s(kind);
                ev.components = component(
                    ComponentType::Interface,
                    &[("deviceId", device.into()), ("interfaceId", intf.clone())],
                );
                let threshold = if severe { "95" } else { "98" };
                map(&[
                    ("deviceId", device.into()),
                    ("interfaceId", intf),
                    ("threshold", threshold.into()),
                ])
            }
            Template::BgpDown => {
                ev.severity = EventSeverity::Critical as i32;
                ev.title = s("BGP Peer Session Down");
                ev.event_type = s("BGP_SESSION_DOWN");
                ev.rule_id = s("BGP_SESSION_DOWN");
                ev.components = device_only;
                let peer = self.rng.below(64);
                let vrf = *self.rng.pick(&["default", "default", "MGMT", "PROD"]);
                map(&[
                    ("deviceId", device.into()),
                    ("peerAddress", format!("10.255.0.{peer}")),
                    ("peerAs", format!("{}", 65000 + peer)),
                    ("vrf", vrf.into()),
                    ("count", "1".into()),
                ])
            }
            Template::HighCpu => {
                ev.severity = *self
                    .rng
                    .pick(&[EventSeverity::Warning as i32, EventSeverity::Error as i32]);
                ev.title = s("High CPU Utilization");
                ev.event_type = s("HIGH_CPU_UTIL");
                ev.rule_id = s("HIGH_CPU_UTIL");
                ev.components = device_only;
                map(&[
                    ("deviceId", device.into()),
                    ("hostname", host.into()),
                    ("threshold", "90".into()),
                ])
            }
            Template::StoppedStreaming => {
                ev.severity = EventSeverity::Info as i32;
                ev.title = s("Device Stopped Streaming");
                ev.event_type = s("DEVICE_STOPPED_STREAMING");
                ev.components = device_only;
                map(&[
                    ("deviceId", device.into()),
                    ("hostname", host.into()),
                    ("count", "1".into()),
                ])
            }
            Template::LinkDown => {
                ev.severity = EventSeverity::Warning as i32;
                ev.title = s("Interface Link Down");
                ev.event_type = s("INTF_LINK_DOWN");
                ev.rule_id = s("INTF_LINK_DOWN");
                ev.components = component(
                    ComponentType::Interface,
                    &[("deviceId", device.into()), ("interfaceId", intf.clone())],
                );
                map(&[
                    ("deviceId", device.into()),
                    ("hostname", host.into()),
                    ("interfaceId", intf),
                    ("count", "1".into()),
                ])
            }
        };
        self.roll_value(template, &mut data);
        ev.description = Some(describe(template, &data));
        ev.data = Some(EventData { data });
        let event = Arc::new(ev);
        self.alive.push(Alive {
            template,
            event: event.clone(),
        });
        change(Operation::Updated, now, event, None)
    }

    fn change(&mut self) -> Change {
        let i = self.rng.below(self.alive.len() as u64) as usize;
        let template = self.alive[i].template;
        let old = self.alive[i].event.clone();
        let mut data = old.data.clone().unwrap_or_default().data;
        let changed = self.roll_value(template, &mut data);
        let now = self.stamp();
        let description = describe(template, &data);
        let mut full = (*old).clone();
        full.description = Some(description.clone());
        full.last_updated_time = Some(now);
        full.data = Some(EventData { data });
        let full = Arc::new(full);
        self.alive[i].event = full.clone();
        let wire = self.partial_updates.then(|| {
            Arc::new(Event {
                key: old.key.clone(),
                description: Some(description),
                data: Some(EventData {
                    data: changed.into_iter().collect(),
                }),
                last_updated_time: Some(now),
                ..Default::default()
            })
        });
        change(Operation::Updated, now, full, wire)
    }

    fn delete(&mut self) -> Change {
        let i = self.rng.below(self.alive.len() as u64) as usize;
        let gone = self.alive.swap_remove(i).event;
        let wire = Arc::new(Event {
            key: gone.key.clone(),
            ..Default::default()
        });
        change(Operation::Deleted, self.stamp(), gone, Some(wire))
    }

    fn interface(&mut self) -> String {
        match self.rng.below(4) {
            0 => "Management1".into(),
            1 => format!("Ethernet{}/1", 49 + self.rng.below(4)),
            _ => format!("Ethernet{}", 1 + self.rng.below(48)),
        }
    }

    /// Sets the fluctuating data entry of `template` to a new value and
    /// returns the entries that changed (for partial updates).
    fn roll_value(
        &mut self,
        template: Template,
        data: &mut BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let (k, v) = match template {
            Template::IntfOutUtil | Template::IntfInUtil => {
                let threshold: f64 = data
                    .get("threshold")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(95.0);
                let value = if threshold < 98.0 {
                    threshold + self.rng.unit() * 1300.0
                } else {
                    threshold + self.rng.unit() * 2.0
                };
                ("value", format!("{value:.5}"))
            }
            Template::HighCpu => ("value", format!("{:.1}", 90.0 + self.rng.unit() * 10.0)),
            _ => {
                let count = data
                    .get("count")
                    .and_then(|c| c.parse::<u64>().ok())
                    .map_or(1, |c| c + 1);
                ("count", count.to_string())
            }
        };
        data.insert(k.to_string(), v.clone());
        vec![(k.to_string(), v)]
    }
}

fn change(op: Operation, time: Timestamp, full: Arc<Event>, wire: Option<Arc<Event>>) -> Change {
    let key = full
        .key
        .as_ref()
        .and_then(key_id)
        .unwrap_or_else(|| (String::new(), 0, 0));
    Change {
        op,
        time,
        key,
        full,
        wire,
    }
}

fn describe(template: Template, d: &BTreeMap<String, String>) -> String {
    let g = |k: &str| d.get(k).map(String::as_str).unwrap_or("?");
    match template {
        Template::IntfOutUtil => format!(
            "Interface outOctets bandwidth utilization ({}%) exceeded threshold of {}%",
            g("value"),
            g("threshold")
        ),
        Template::IntfInUtil => format!(
            "Interface inOctets bandwidth utilization ({}%) exceeded threshold of {}%",
            g("value"),
            g("threshold")
        ),
        Template::BgpDown => format!(
            "BGP session to peer {} (AS {}) in VRF {} is down (flapped {} times)",
            g("peerAddress"),
            g("peerAs"),
            g("vrf"),
            g("count")
        ),
        Template::HighCpu => format!(
            "CPU utilization ({}%) exceeded threshold of {}% on {}",
            g("value"),
            g("threshold"),
            g("hostname")
        ),
        Template::StoppedStreaming => format!(
            "Device {} ({}) stopped streaming ({} times)",
            g("hostname"),
            g("deviceId"),
            g("count")
        ),
        Template::LinkDown => format!(
            "Interface {} on {} is operationally down ({} times)",
            g("interfaceId"),
            g("hostname"),
            g("count")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(c: &Change) -> String {
        String::from_utf8(cvp_proto::json::event_to_json(c.wire_event())).unwrap_or_default()
    }

    #[test]
    fn wall_clock_stamps_changes_with_the_time_they_are_made() {
        let secs = |t: &Timestamp| t.seconds as f64 + t.nanos as f64 / 1e9;
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let mut g = Generator::new(3, true).with_wall_clock(true);
        let before = now();
        let changes: Vec<Change> = (0..200).map(|_| g.live()).collect();
        let after = now();
        for c in &changes {
            let t = secs(&c.time);
            assert!(before <= t && t <= after, "{t} not in [{before}, {after}]");
            if c.op != Operation::Deleted {
                let updated = c.full.last_updated_time.as_ref().map(secs);
                assert_eq!(updated, Some(t));
            }
        }
        // Without it, times are the simulated ones from 2026-01-01.
        let c = Generator::new(3, true).live();
        assert!(secs(&c.time) < BASE_SECONDS as f64 + 3600.0);
    }

    #[test]
    fn deterministic_and_monotonic() {
        let run = |seed| {
            let mut g = Generator::new(seed, true);
            let mut out: Vec<Change> = (0..20).map(|_| g.initial()).collect();
            out.extend((0..500).map(|_| g.live()));
            out
        };
        let a = run(7);
        let b = run(7);
        assert_eq!(
            a.iter().map(render).collect::<Vec<_>>(),
            b.iter().map(render).collect::<Vec<_>>()
        );
        assert!(a
            .windows(2)
            .all(|w| crate::state::ts_key(&w[0].time) < crate::state::ts_key(&w[1].time)));
        assert!(a.iter().all(|c| c.key.0.len() == 16));
        let deletes = a.iter().filter(|c| c.op == Operation::Deleted).count();
        assert!((20..90).contains(&deletes), "deletes: {deletes}");
        assert_ne!(
            run(8).iter().map(render).collect::<Vec<_>>(),
            a.iter().map(render).collect::<Vec<_>>()
        );
    }
}
