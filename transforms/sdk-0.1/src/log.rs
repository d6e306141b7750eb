//! The host's log; each line is tagged with the transform's name.
//!
//! Guests have no stderr worth reading, so this is the way to say something.

use crate::bindings::cvp_stream::transform::host;
pub use crate::Level;

pub fn log(level: Level, message: impl AsRef<str>) {
    host::log(level, message.as_ref());
}

pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
