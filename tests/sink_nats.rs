//! The nats sink against the real server (scaffold: tests being written).
