//! The amqp sink against the real server (scaffold: tests being written).
