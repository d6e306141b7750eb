//! The redis sink against the real server (scaffold: tests being written).
