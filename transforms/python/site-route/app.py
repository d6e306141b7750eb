"""site-route: a cvp-stream transform written in Python.

Routes each record to a topic named after the `site` tag of the device the
event is about, and keys it by `hostname:interface`, from the inventory
records (CloudVision devices with their tags) that the host joins onto each
event. Config:

    topic:    the topic template; `{site}` becomes the device's tag value,
              e.g. `events.{site}` (required)
    fallback: the topic for a device without the tag, a device the inventory
              does not know, or an event naming no device (optional; without
              it those records keep their topic)
    tag:      the device tag's label (optional, default `site`)

Built into a component with componentize-py (see build.sh), for the contract
cvp-stream:transform@0.2.0, with cvp_transform.py (../sdk) bundled beside it.
"""

import re

import cvp_transform as cvp
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host

# The device and interface the event names (data first, then components) and
# the inventory's records of the devices, with their tags. Not the record's
# value: the transform changes only its topic and key.
READS = ["data.deviceId", "data.interfaceId", "components", "devices"]

PLACEHOLDER = "{site}"

# Kafka topic names allow only these characters; a tag value is free text
# ("New York"), and a record for an invalid topic would fail in the host.
_NOT_IN_TOPIC = re.compile(r"[^A-Za-z0-9._-]")


def parse_config(pairs):
    """The host's config pairs as (template, fallback or None, tag label).
    Raises ValueError with a message naming the offending key."""
    config = dict(pairs)
    unknown = sorted(set(config) - {"topic", "fallback", "tag"})
    if unknown:
        raise ValueError(f"unknown config key `{unknown[0]}` (expected topic, fallback, tag)")
    template = config.get("topic")
    if not template:
        raise ValueError(
            "config key `topic` is missing: give a topic template with {site}, "
            "e.g. topic: events.{site}"
        )
    if PLACEHOLDER not in template:
        raise ValueError(
            f"config key `topic` must contain {PLACEHOLDER}, got {template!r} "
            "(e.g. events.{site})"
        )
    fallback = config.get("fallback") or None
    label = config.get("tag", "site")
    if not label:
        raise ValueError("config key `tag` must not be empty")
    return template, fallback, label


def topic_part(value):
    """A tag value made safe inside a Kafka topic name: characters Kafka
    refuses become `_` (`New York` -> `New_York`)."""
    return _NOT_IN_TOPIC.sub("_", value)


class Router:
    """The per-record logic, free of host calls so it can be tested alone."""

    def __init__(self, template, fallback, label):
        self.template = template
        self.fallback = fallback
        self.label = label

    def route(self, event, record):
        """The output for one event (a cvp.Event): the record on its site's
        topic (or the fallback) with key `hostname:interface`."""
        device_id = event.device_id()
        if device_id is None:
            # Nothing to key or route by: only the fallback topic applies.
            return cvp.copy_to(self.fallback) if self.fallback else cvp.keep()
        device = event.device(device_id)
        site = cvp.tag(device, self.label) if device is not None else None
        if site:
            topic = self.template.replace(PLACEHOLDER, topic_part(site))
        else:
            topic = self.fallback  # None keeps the record's topic
        name = (device.hostname if device is not None else None) or device_id
        interface = event.interface_id()
        key = f"{name}:{interface}" if interface else name
        return cvp.patch(topic=topic, key=key)


# componentize-py creates a fresh Transformer object for every call from the
# host, so state that must outlive `init` lives at module level.
_router = None


class Transformer(exports.Transformer):
    def init(self):
        global _router
        try:
            template, fallback, label = parse_config(host.config())
        except ValueError as e:
            raise Err(str(e))
        _router = Router(template, fallback, label)
        host.log(
            host.Level.DEBUG,
            f"site-route: topic {template} by device tag `{label}`, "
            + (f"fallback {fallback}" if fallback else "no fallback (topic kept)"),
        )
        return cvp.reads(*READS)

    def process(self, batch):
        return cvp.process(batch, _router.route, "site-route")
