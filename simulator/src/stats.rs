//! Counters the host's tests and benchmarks read through `SimHandle::stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cvp_proto::Operation;

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Subscribe calls accepted.
    pub subscribes: u64,
    /// GetAll calls accepted.
    pub get_alls: u64,
    /// GetOne calls accepted.
    pub get_ones: u64,
    /// Messages handed to gRPC streams, by operation.
    pub sent_initial: u64,
    pub sent_initial_sync_complete: u64,
    pub sent_updated: u64,
    pub sent_deleted: u64,
    /// gRPC calls rejected for a missing or wrong bearer token.
    pub unauthenticated: u64,
    /// Successful and failed REST logins.
    pub logins: u64,
    pub login_failures: u64,
    /// DeviceService and TagAssignmentService Subscribe calls accepted.
    pub device_subscribes: u64,
    pub tag_subscribes: u64,
}

impl SimStats {
    /// All stream messages sent, whatever their operation.
    pub fn messages_sent(&self) -> u64 {
        self.sent_initial + self.sent_initial_sync_complete + self.sent_updated + self.sent_deleted
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub subscribes: AtomicU64,
    pub get_alls: AtomicU64,
    pub get_ones: AtomicU64,
    sent: [AtomicU64; 4],
    pub unauthenticated: AtomicU64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub device_subscribes: AtomicU64,
    pub tag_subscribes: AtomicU64,
}

impl Counters {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn count_sent(&self, op: i32, n: u64) {
        let i = match Operation::try_from(op) {
            Ok(Operation::Initial) => 0,
            Ok(Operation::InitialSyncComplete) => 1,
            Ok(Operation::Deleted) => 3,
            _ => 2,
        };
        self.sent[i].fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> SimStats {
        SimStats {
            subscribes: self.subscribes.load(Relaxed),
            get_alls: self.get_alls.load(Relaxed),
            get_ones: self.get_ones.load(Relaxed),
            sent_initial: self.sent[0].load(Relaxed),
            sent_initial_sync_complete: self.sent[1].load(Relaxed),
            sent_updated: self.sent[2].load(Relaxed),
            sent_deleted: self.sent[3].load(Relaxed),
            unauthenticated: self.unauthenticated.load(Relaxed),
            logins: self.logins.load(Relaxed),
            login_failures: self.login_failures.load(Relaxed),
            device_subscribes: self.device_subscribes.load(Relaxed),
            tag_subscribes: self.tag_subscribes.load(Relaxed),
        }
    }
}
