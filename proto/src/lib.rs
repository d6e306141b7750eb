//! CloudVision's resource API messages, generated from `proto/arista`.
//!
//! Decoding follows protobuf rules, so fields and enum values added by newer
//! CVP releases are skipped or kept as raw numbers instead of failing.

pub mod json;
pub mod merge;

/// Arista's wrapper types (`fmp/wrappers.proto`).
pub mod fmp {
    tonic::include_proto!("fmp");
}

pub mod arista {
    pub mod subscriptions {
        tonic::include_proto!("arista.subscriptions");
    }
    pub mod time {
        tonic::include_proto!("arista.time");
    }
    pub mod event {
        pub mod v1 {
            tonic::include_proto!("arista.event.v1");
        }
    }
    pub mod inventory {
        pub mod v1 {
            tonic::include_proto!("arista.inventory.v1");
        }
    }
    pub mod tag {
        pub mod v2 {
            tonic::include_proto!("arista.tag.v2");
        }
    }
}

pub use arista::event::v1 as event;
pub use arista::inventory::v1 as inventory;
pub use arista::subscriptions::Operation;
pub use arista::tag::v2 as tag;

/// The descriptors of every message above (imports included), as compiled by
/// `build.rs` from the same `.proto` files the types are generated from.
///
/// The JSON reader is driven by these, so a field added to the protos is read
/// without touching `json.rs`.
pub fn descriptor_pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::LazyLock<prost_reflect::DescriptorPool> =
        std::sync::LazyLock::new(|| {
            prost_reflect::DescriptorPool::decode(
                include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin")).as_slice(),
            )
            .expect("build.rs wrote a valid descriptor set")
        });
    &POOL
}
