"""Unit tests of app.py's logic, run natively (no WebAssembly).

    ../../../target/py-venv/bin/python test_app.py      (after ./build.sh)

Generates the Python bindings for wit/ with componentize-py into a temporary
folder, imports app.py against them, and stands in for the host's `config`
and `log` imports.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # keep the source folder clean

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))

_bindings = tempfile.TemporaryDirectory()
subprocess.run(
    [
        os.path.join(os.path.dirname(sys.executable), "componentize-py"),
        "-d", os.path.join(REPO, "wit"), "-w", "transform",
        "bindings", _bindings.name,
    ],
    check=True,
    stdout=subprocess.DEVNULL,
)
sys.path[:0] = [_bindings.name, HERE]

import app  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world.imports import host  # noqa: E402
from wit_world.imports.types import (  # noqa: E402
    Component, Event, Header, Input, KafkaRecord, Operation, Output_Error,
    Output_Records, Severity,
)

SITES = {"JPE19181520": "dc1", "SSJ17371234": "dc2"}


def event(data=(), components=()):
    known = dict(
        key="k", timestamp=1, operation=Operation.UPDATED, severity=Severity.INFO,
        severity_code=1, title="t", description="d", event_type="DEVICE_INTF_ERR",
        rule_id="", data=list(data), components=list(components), last_updated_time=1,
    )
    # Fields the WIT gains later get zero values, so these tests keep working.
    zero = {int: 0, str: ""}
    for f in dataclasses.fields(Event):
        if f.name not in known:
            known[f.name] = zero.get(f.type, [])
    return Event(**known)


def inp(ev, headers=()):
    return Input(ev, KafkaRecord("events", b"key", b"value", list(headers)))


def start(**config):
    """A Transformer whose init saw `config` (maps given as JSON, as the host does)."""
    logs = []
    host.config = lambda: [
        (k, v if isinstance(v, str) else json.dumps(v)) for k, v in config.items()
    ]
    host.log = lambda level, msg: logs.append((level, msg))
    app.Transformer().init()
    # componentize-py makes a new Transformer for every call: process must
    # not depend on state kept on the object init ran on.
    return app.Transformer(), logs


def init_error(**config):
    try:
        start(**config)
    except Err as e:
        return e.value
    raise AssertionError("init did not fail")


class InitTest(unittest.TestCase):
    def test_missing_sites(self):
        self.assertIn("`sites` is missing", init_error())

    def test_sites_not_a_map(self):
        self.assertIn("`sites` must be a map", init_error(sites="dc1"))
        self.assertIn("`sites` must be a map", init_error(sites=["a"]))
        self.assertIn("`sites` must be a map", init_error(sites="{not json"))

    def test_site_not_a_string(self):
        msg = init_error(sites={"JPE19181520": 3})
        self.assertIn("`sites`", msg)
        self.assertIn("JPE19181520", msg)

    def test_empty_header_name(self):
        self.assertIn("`header`", init_error(sites=SITES, header=""))

    def test_logs_once_at_debug(self):
        _, logs = start(sites=SITES, default="unknown")
        self.assertEqual(len(logs), 1)
        self.assertEqual(logs[0][0], host.Level.DEBUG)
        self.assertIn("2 devices", logs[0][1])


class ProcessTest(unittest.TestCase):
    def test_device_from_data(self):
        t, _ = start(sites=SITES)
        [out] = t.process([inp(event(data=[("a", "x"), ("deviceId", "JPE19181520")]))])
        self.assertIsInstance(out, Output_Records)
        [rec] = out.value
        self.assertEqual(rec.headers, [Header("site", b"dc1")])
        self.assertEqual((rec.topic, rec.key, rec.value), ("events", b"key", b"value"))

    def test_device_from_first_component(self):
        t, _ = start(sites=SITES)
        comps = [
            Component("COMPONENT_TYPE_INTERFACE", [("interfaceId", "Et1")]),
            Component("COMPONENT_TYPE_DEVICE", [("deviceId", "SSJ17371234")]),
            Component("COMPONENT_TYPE_DEVICE", [("deviceId", "JPE19181520")]),
        ]
        [out] = t.process([inp(event(components=comps))])
        self.assertEqual(out.value[0].headers, [Header("site", b"dc2")])

    def test_data_wins_over_components(self):
        t, _ = start(sites=SITES)
        ev = event(
            data=[("deviceId", "SSJ17371234")],
            components=[Component("C", [("deviceId", "JPE19181520")])],
        )
        [out] = t.process([inp(ev)])
        self.assertEqual(out.value[0].headers, [Header("site", b"dc2")])

    def test_unknown_device_without_default_is_untouched(self):
        t, _ = start(sites=SITES)
        [a, b] = t.process([
            inp(event(data=[("deviceId", "NOPE")]), [Header("x", b"1")]),
            inp(event()),
        ])
        self.assertEqual(a.value[0].headers, [Header("x", b"1")])
        self.assertEqual(b.value[0].headers, [])

    def test_unknown_device_with_default(self):
        t, _ = start(sites=SITES, default="unknown", header="dc")
        [out] = t.process([inp(event(data=[("deviceId", "NOPE")]))])
        self.assertEqual(out.value[0].headers, [Header("dc", b"unknown")])

    def test_keeps_other_headers_and_replaces_same_name(self):
        t, _ = start(sites=SITES)
        headers = [Header("a", b"1"), Header("site", b"old"), Header("b", b"2")]
        [out] = t.process([inp(event(data=[("deviceId", "JPE19181520")]), headers)])
        self.assertEqual(
            out.value[0].headers,
            [Header("a", b"1"), Header("site", b"dc1"), Header("b", b"2")],
        )

    def test_one_output_per_input_in_order(self):
        t, _ = start(sites=SITES)
        devices = ["JPE19181520", "X", "SSJ17371234"] * 100
        outs = t.process([inp(event(data=[("deviceId", d)])) for d in devices])
        self.assertEqual(len(outs), len(devices))
        got = [o.value[0].headers[0].value if o.value[0].headers else None for o in outs]
        self.assertEqual(got, [b"dc1", None, b"dc2"] * 100)

    def test_bad_input_is_an_error_output_not_a_trap(self):
        t, _ = start(sites=SITES)
        bad = Input(event(data=[("deviceId", "JPE19181520")]), None)
        [a, b] = t.process([bad, inp(event())])
        self.assertIsInstance(a, Output_Error)
        self.assertIsInstance(b, Output_Records)


if __name__ == "__main__":
    unittest.main()
