"""Unit tests of site-enrich's app.py, run natively (no WebAssembly).

    target/py-venv/bin/python transforms/python/site-enrich/test_app.py

(after build.sh has made the venv). Generates the Python bindings for wit/
with componentize-py, imports app.py against them with the SDK helpers from
../sdk, and stands in for the host's `config` and `log` imports.
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
import cvp_transform as cvp  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from cvp_testing import event, inp, record  # noqa: E402
from wit_world.imports import host  # noqa: E402
from wit_world.imports.types import (  # noqa: E402
    BytesChange_Keep, Component, Header, Output_Error, Output_Keep,
    Output_Records, Patch,
)

SITES = {"JPE19181520": "dc1", "SSJ17371234": "dc2"}


def start(**config):
    """A Transformer whose init saw `config`; (transformer, reads, logs)."""
    logs = cvp_testing.host(**config)
    reads = app.Transformer().init()
    # componentize-py makes a new Transformer for every call: process must
    # not depend on state kept on the object init ran on.
    return app.Transformer(), reads, logs


def init_error(**config):
    try:
        start(**config)
    except Err as e:
        return e.value
    raise AssertionError("init did not fail")


def site_header(name, site):
    """The output that sets one header, as the host receives it."""
    return Output_Records([Patch(
        topic=None, key=BytesChange_Keep(), value=BytesChange_Keep(), headers=None,
        set_headers=[Header(name, site.encode())], remove_headers=[],
    )])


def with_device(device, **fields):
    return inp(data=[("deviceId", device)] if device else [], components=[], **fields)


class InitTest(unittest.TestCase):
    def test_reads_only_the_device_fields(self):
        _, reads, _ = start(sites=SITES)
        self.assertEqual(reads, ["data.deviceId", "components"])

    def test_missing_sites(self):
        self.assertEqual(
            init_error(),
            "config key `sites` is missing: give a map of deviceId to site name, "
            "e.g. sites: { JPE19181520: dc1 }",
        )

    def test_sites_not_a_map(self):
        self.assertEqual(
            init_error(sites="dc1"),
            "config key `sites` must be a map of deviceId to site name, got 'dc1'",
        )
        self.assertIn("`sites` must be a map", init_error(sites=["a"]))
        self.assertIn("`sites` must be a map", init_error(sites="{not json"))

    def test_site_not_a_string(self):
        self.assertEqual(
            init_error(sites={"JPE19181520": 3}),
            "config key `sites`: the site of device 'JPE19181520' must be a string, got 3",
        )

    def test_empty_header_name(self):
        self.assertEqual(init_error(sites=SITES, header=""), "config key `header` must not be empty")

    def test_logs_once_at_debug(self):
        _, _, logs = start(sites=SITES, default="unknown")
        self.assertEqual(
            logs,
            [(host.Level.DEBUG, "site-enrich: 2 devices mapped, header `site`, default `unknown`")],
        )


class ProcessTest(unittest.TestCase):
    def test_device_from_data(self):
        t, _, _ = start(sites=SITES)
        [out] = t.process([inp(data=[("deviceId", "JPE19181520")], components=[])])
        self.assertEqual(out, site_header("site", "dc1"))

    def test_device_from_first_component(self):
        t, _, _ = start(sites=SITES)
        comps = [
            Component("COMPONENT_TYPE_INTERFACE", [("interfaceId", "Et1")]),
            Component("COMPONENT_TYPE_DEVICE", [("deviceId", "SSJ17371234")]),
            Component("COMPONENT_TYPE_DEVICE", [("deviceId", "JPE19181520")]),
        ]
        # `data` declared but unset arrives None: not an error.
        [out] = t.process([inp(data=None, components=comps)])
        self.assertEqual(out, site_header("site", "dc2"))

    def test_unknown_device_or_none_without_default_is_kept(self):
        t, _, _ = start(sites=SITES)
        outs = t.process([with_device("NOPE"), with_device(None)])
        self.assertEqual(outs, [Output_Keep(), Output_Keep()])

    def test_unknown_device_with_default(self):
        t, _, _ = start(sites=SITES, default="unknown", header="dc")
        [a, b] = t.process([with_device("NOPE"), with_device(None)])
        self.assertEqual(a, site_header("dc", "unknown"))
        self.assertEqual(b, site_header("dc", "unknown"))

    def test_host_keeps_other_headers_and_replaces_same_name(self):
        t, _, _ = start(sites=SITES)
        headers = [Header("a", b"1"), Header("site", b"old"), Header("b", b"2")]
        rec = record(value=b"v", headers=headers)
        [out] = t.process([with_device("JPE19181520")])
        [patch] = out.value
        got = cvp.apply(rec, patch)
        # The old site header goes; the new one comes last (the host's
        # set-headers), the others stay as they were.
        self.assertEqual(got.headers, [Header("a", b"1"), Header("b", b"2"), Header("site", b"dc1")])
        self.assertEqual((got.topic, got.key, got.value), ("events", b"key", b"v"))

    def test_one_output_per_input_in_order(self):
        t, _, _ = start(sites=SITES)
        devices = ["JPE19181520", "X", "SSJ17371234"] * 100
        outs = t.process([with_device(d) for d in devices])
        self.assertEqual(
            outs, [site_header("site", "dc1"), Output_Keep(), site_header("site", "dc2")] * 100
        )

    def test_bad_input_is_an_error_output_not_a_trap(self):
        t, _, _ = start(sites=SITES)
        bad = with_device("JPE19181520")
        bad.event.data = 7  # not a list: the lookup raises
        [a, b] = t.process([bad, with_device("SSJ17371234")])
        self.assertEqual(a, Output_Error("site-enrich: TypeError: 'int' object is not iterable"))
        self.assertEqual(b, site_header("site", "dc2"))


class UndeclaredFieldTest(unittest.TestCase):
    """The SDK turns reading a field init did not return into an error that
    says which and what to do, rather than the None the host sends."""

    def test_reading_an_undeclared_field_names_it(self):
        start(sites=SITES)
        ev = cvp.Event(event(title=None, data=[], components=[]))
        with self.assertRaises(cvp.UndeclaredField) as caught:
            ev.title
        self.assertEqual(
            str(caught.exception),
            'field "title" was read but not declared: add "title" to the reads '
            "list that init returns (cvp_transform.reads(...))",
        )
        with self.assertRaises(cvp.UndeclaredField) as caught:
            ev.data_field("interfaceId")  # only data.deviceId was declared
        self.assertEqual(caught.exception.field, "data.interfaceId")
        self.assertEqual(ev.data_field("deviceId"), None)  # declared, unset

    def test_in_process_it_is_that_event_error(self):
        start(sites=SITES)
        outs = cvp.process(
            [with_device("JPE19181520")],
            lambda e, r: cvp.set_header("title", e.title),
            "site-enrich",
        )
        self.assertEqual(outs, [Output_Error(
            'site-enrich: UndeclaredField: field "title" was read but not declared: '
            'add "title" to the reads list that init returns (cvp_transform.reads(...))'
        )])


if __name__ == "__main__":
    unittest.main()
