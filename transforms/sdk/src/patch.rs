//! What a transform answers: keep the record, change it ([`Patch`]), fan
//! it out, or drop it ([`Output`]). A patch names only what changes, so a
//! transform never copies the value it leaves alone (the default value, the
//! event as JSON, is not even built unless something keeps it).

use crate::bindings::cvp_stream::transform::types as wit;
use crate::Header;

/// Changes to the input's record; [`Patch::new`] changes nothing.
#[derive(Clone, Debug)]
pub struct Patch(wit::Patch);

impl Default for Patch {
    fn default() -> Self {
        Patch::new()
    }
}

impl Patch {
    pub fn new() -> Patch {
        Patch(wit::Patch {
            topic: None,
            key: wit::BytesChange::Keep,
            value: wit::BytesChange::Keep,
            headers: None,
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
        })
    }

    /// The record, copied to `topic` (as one of several outputs).
    pub fn copy_to(topic: impl Into<String>) -> Patch {
        Patch::new().topic(topic)
    }

    pub fn topic(mut self, topic: impl Into<String>) -> Patch {
        self.0.topic = Some(topic.into());
        self
    }

    pub fn key(mut self, key: impl AsRef<[u8]>) -> Patch {
        self.0.key = wit::BytesChange::Set(key.as_ref().to_vec());
        self
    }

    /// A null key.
    pub fn null_key(mut self) -> Patch {
        self.0.key = wit::BytesChange::Null;
        self
    }

    pub fn value(mut self, value: impl AsRef<[u8]>) -> Patch {
        self.0.value = wit::BytesChange::Set(value.as_ref().to_vec());
        self
    }

    /// A null value (a tombstone on a compacted topic).
    pub fn null_value(mut self) -> Patch {
        self.0.value = wit::BytesChange::Null;
        self
    }

    /// Sets header `key` (replacing any of that key).
    pub fn header(mut self, key: impl Into<String>, value: impl AsRef<[u8]>) -> Patch {
        self.0.set_headers.push(Header {
            key: key.into(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// Removes every header named `key`.
    pub fn remove_header(mut self, key: impl Into<String>) -> Patch {
        self.0.remove_headers.push(key.into());
        self
    }

    /// Replaces every header with these (before [`Patch::header`]'s).
    pub fn headers(mut self, headers: Vec<Header>) -> Patch {
        self.0.headers = Some(headers);
        self
    }

    /// The generated record, e.g. to inspect in a unit test.
    pub fn raw(&self) -> &wit::Patch {
        &self.0
    }
}

/// What a transform made of one input.
#[derive(Clone, Debug)]
pub enum Output {
    /// The record unchanged: the cheapest answer.
    Keep,
    /// No record.
    Drop,
    /// These records, in order, each the input's record with a patch.
    Records(Vec<Patch>),
}

impl Output {
    /// The record with one patch.
    pub fn one(patch: Patch) -> Output {
        Output::Records(vec![patch])
    }

    pub(crate) fn into_wit(self) -> wit::Output {
        match self {
            Output::Keep => wit::Output::Keep,
            Output::Drop => wit::Output::Records(Vec::new()),
            Output::Records(p) => wit::Output::Records(p.into_iter().map(|p| p.0).collect()),
        }
    }
}
