"""Unit tests of site-route's app.py, run natively (no WebAssembly).

    target/py-venv/bin/python transforms/python/site-route/test_app.py

(after a Python build.sh has made the venv). Generates the Python bindings
for wit/ with componentize-py, imports app.py against them with the SDK
helpers from ../sdk, and stands in for the host's `config` and `log`.
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path[:0] = [os.path.join(HERE, "..", "sdk"), HERE]

import cvp_testing  # noqa: E402

cvp_testing.use_bindings(os.path.join(REPO, "wit"))

import app  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from cvp_testing import device, inp  # noqa: E402
from wit_world.imports import host  # noqa: E402
from wit_world.imports.types import (  # noqa: E402
    BytesChange_Keep, BytesChange_Set, Component, Output_Error, Output_Keep,
    Output_Records, Patch,
)

LEAF1 = device("JPE19181520", "leaf1", tags=[("role", "leaf"), ("site", "dc1")])
LEAF2 = device("SSJ17371234", "leaf2", tags=[("site", "New York")])
NO_SITE = device("HSH14525062", "spine1", tags=[("role", "spine")])
NO_NAME = device("JAS13340011", None, tags=[("site", "dc2")])
INVENTORY = [LEAF1, LEAF2, NO_SITE, NO_NAME]


def start(**config):
    """(transformer, reads, logs) after init with `config`."""
    logs = cvp_testing.host(**config)
    reads = app.Transformer().init()
    return app.Transformer(), reads, logs


def init_error(**config):
    try:
        start(**config)
    except Err as e:
        return e.value
    raise AssertionError("init did not fail")


def routed(topic, key):
    """The output moving the record to `topic` with key `key` (None keeps it)."""
    return Output_Records([Patch(
        topic=topic,
        key=BytesChange_Set(key.encode()) if key is not None else BytesChange_Keep(),
        value=BytesChange_Keep(), headers=None, set_headers=[], remove_headers=[],
    )])


def about(device_id, interface_id=None, devices=INVENTORY):
    """An input naming the device (and interface) in `data`, as CVP's
    interface events do, with the inventory the host joined onto it."""
    data = [("deviceId", device_id)] if device_id else []
    if interface_id:
        data.append(("interfaceId", interface_id))
    return inp(data=sorted(data), components=[], devices=devices)


class InitTest(unittest.TestCase):
    def test_reads(self):
        _, reads, logs = start(topic="events.{site}")
        self.assertEqual(reads, ["data.deviceId", "data.interfaceId", "components", "devices"])
        self.assertEqual(
            logs, [(host.Level.DEBUG, "site-route: topic events.{site} by device tag `site`, no fallback (topic kept)")]
        )

    def test_config_errors_name_the_key(self):
        self.assertEqual(
            init_error(),
            "config key `topic` is missing: give a topic template with {site}, e.g. topic: events.{site}",
        )
        self.assertEqual(
            init_error(topic="events"),
            "config key `topic` must contain {site}, got 'events' (e.g. events.{site})",
        )
        self.assertEqual(init_error(topic="e.{site}", tag=""), "config key `tag` must not be empty")
        self.assertEqual(
            init_error(topic="e.{site}", fallbak="x"),
            "unknown config key `fallbak` (expected topic, fallback, tag)",
        )


class RouteTest(unittest.TestCase):
    def test_site_topic_and_hostname_interface_key(self):
        t, _, _ = start(topic="events.{site}", fallback="events.unrouted")
        outs = t.process([
            about("JPE19181520", "Ethernet49/1"),
            about("SSJ17371234", "Management1"),   # tag value made topic-safe
            about("HSH14525062", "Ethernet1"),     # no site tag
            about("JAS13340011", "Ethernet2"),     # no hostname: the serial
            about("ZZZ00000000", "Ethernet3"),     # not in the inventory
            about("JPE19181520"),                  # no interface
            about(None),                           # no device at all
        ])
        self.assertEqual(outs, [
            routed("events.dc1", "leaf1:Ethernet49/1"),
            routed("events.New_York", "leaf2:Management1"),
            routed("events.unrouted", "spine1:Ethernet1"),
            routed("events.dc2", "JAS13340011:Ethernet2"),
            routed("events.unrouted", "ZZZ00000000:Ethernet3"),
            routed("events.dc1", "leaf1"),
            routed("events.unrouted", None),
        ])

    def test_without_fallback_the_topic_is_kept(self):
        t, _, _ = start(topic="{site}-events")
        outs = t.process([about("HSH14525062", "Et1"), about(None), about("JPE19181520", "Et1", devices=None)])
        self.assertEqual(outs, [routed(None, "spine1:Et1"), Output_Keep(), routed(None, "JPE19181520:Et1")])

    def test_another_tag_and_device_from_components(self):
        t, _, _ = start(topic="by-role.{site}", tag="role")
        comps = [Component("COMPONENT_TYPE_INTERFACE", [("deviceId", "HSH14525062"), ("interfaceId", "Ethernet7")])]
        [out] = t.process([inp(data=None, components=comps, devices=INVENTORY)])
        self.assertEqual(out, routed("by-role.spine", "spine1:Ethernet7"))

    def test_bad_input_is_an_error_output(self):
        t, _, _ = start(topic="events.{site}")
        bad = about("JPE19181520", "Et1")
        bad.event.devices = [None]
        [a, b] = t.process([bad, about("JPE19181520", "Et1")])
        self.assertEqual(a, Output_Error("site-route: AttributeError: 'NoneType' object has no attribute 'id'"))
        self.assertEqual(b, routed("events.dc1", "leaf1:Et1"))


if __name__ == "__main__":
    unittest.main()
