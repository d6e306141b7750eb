"""Unit tests of cvp_transform.py (the Python SDK helpers), run natively.

    target/py-venv/bin/python transforms/python/sdk/test_cvp_transform.py

(after a Python build.sh has made the venv with componentize-py).
"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cvp_testing  # noqa: E402

cvp_testing.use_bindings(os.path.join(HERE, "..", "..", "..", "wit"))

import cvp_transform as cvp  # noqa: E402
from cvp_testing import device, event, inp, interface, record  # noqa: E402
from wit_world.imports.types import (  # noqa: E402
    BytesChange_Keep, BytesChange_Null, BytesChange_Set, Header, Output_Error,
    Output_Keep, Output_Records, Patch, Severity,
)


class ReadsTest(unittest.TestCase):
    def test_returns_the_names_once_in_order(self):
        self.assertEqual(
            cvp.reads("title", "data.deviceId", "devices", "title", "value"),
            ["title", "data.deviceId", "devices", "value"],
        )

    def test_refuses_an_unknown_name(self):
        with self.assertRaises(ValueError) as caught:
            cvp.reads("title", "devises")
        self.assertTrue(str(caught.exception).startswith("reads: unknown field 'devises' (expected data.NAME or one of components, data,"))
        self.assertRaises(ValueError, cvp.reads, "data.")

    def test_data_covers_every_data_name(self):
        cvp.reads("data")
        ev = cvp.Event(event(data=[("a", "1"), ("deviceId", "D")]))
        self.assertEqual(ev.data_field("deviceId"), "D")
        self.assertEqual(ev.data, [("a", "1"), ("deviceId", "D")])
        self.assertTrue(cvp.declared("data.anything"))


class EventTest(unittest.TestCase):
    def setUp(self):
        cvp.reads("title", "data.deviceId", "data.interfaceId", "components", "devices", "interfaces", "json")

    def test_declared_fields_and_always_filled_ones(self):
        ev = cvp.Event(event(title="T", description=None))
        self.assertEqual((ev.title, ev.key, ev.severity), ("T", "k", Severity.INFO))
        for name, attr in [("description", "description"), ("event-type", "event_type"),
                           ("link", "link"), ("metadata", "metadata")]:
            with self.assertRaises(cvp.UndeclaredField) as caught:
                getattr(ev, attr)
            self.assertEqual(caught.exception.field, name)
        with self.assertRaises(AttributeError):
            ev.titel

    def test_undeclared_is_not_swallowed_by_getattr_default(self):
        ev = cvp.Event(event())
        with self.assertRaises(cvp.UndeclaredField):
            getattr(ev, "link", None)

    def test_device_and_interface_ids(self):
        comps = [cvp_component("COMPONENT_TYPE_INTERFACE", deviceId="C1", interfaceId="Et2")]
        ev = cvp.Event(event(data=[("deviceId", "D1")], components=comps))
        self.assertEqual((ev.device_id(), ev.interface_id()), ("D1", "Et2"))
        self.assertEqual(ev.component_field("deviceId"), "C1")
        self.assertEqual(ev.component_field("nope", "-"), "-")
        ev = cvp.Event(event(data=None, components=None))
        self.assertEqual((ev.device_id(), ev.interface_id()), (None, None))

    def test_device_interface_and_tags(self):
        d = device("D1", "leaf1", tags=[("site", "dc1"), ("role", "leaf"), ("site", "dc9")])
        i = interface("D1", "Et1", tags=[("peer", "spine1")])
        ev = cvp.Event(event(devices=[d], interfaces=[i]))
        self.assertEqual(ev.device("D1").hostname, "leaf1")
        self.assertIsNone(ev.device("D2"))
        self.assertEqual(cvp.tag(ev.device("D1"), "site"), "dc1")
        self.assertEqual(cvp.tag_values(ev.device("D1"), "site"), ["dc1", "dc9"])
        self.assertEqual(cvp.tag(ev.device("D1"), "rack", "?"), "?")
        self.assertEqual(cvp.tag(ev.interface("D1", "Et1"), "peer"), "spine1")
        self.assertIsNone(ev.interface("D1", "Et2"))
        self.assertIsNone(cvp.Event(event(devices=None)).device("D1"))

    def test_json(self):
        self.assertEqual(cvp.Event(event(json=b'{"key":{"key":"k"}}')).json(), {"key": {"key": "k"}})
        cvp.reads("title")
        with self.assertRaises(cvp.UndeclaredField):
            cvp.Event(event(json=None)).json()

    def test_severity_at_least(self):
        at_least = lambda sev, code: cvp.Event(event(severity=sev, severity_code=code)).severity_at_least(Severity.ERROR)
        self.assertEqual(
            [at_least(Severity.WARNING, 3), at_least(Severity.ERROR, 4),
             at_least(Severity.CRITICAL, 5), at_least(Severity.UNSPECIFIED, 0),
             at_least(Severity.UNSPECIFIED, 9)],
            [False, True, True, False, True],
        )


def cvp_component(kind, **fields):
    from wit_world.imports.types import Component
    return Component(kind, list(fields.items()))


class ToJsonTest(unittest.TestCase):
    def test_event_with_enums_bytes_and_big_ints(self):
        cvp.reads("title", "devices")
        ev = cvp.Event(event(timestamp=1732500000123456789, title="T", json=b"{}",
                             devices=[device("D1", "leaf1", tags=[("site", "dc1")])]))
        self.assertEqual(
            cvp.to_json(ev),
            '{"key":"k","timestamp":1732500000123456789,"operation":"updated",'
            '"severity":"info","severity_code":2,"last_updated_time":1,"delete_time":0,'
            '"title":"T","json":"{}","devices":[{"id":"D1","hostname":"leaf1",'
            '"streaming_status":"active","tags":[{"label":"site","value":"dc1","creator":"user"}]}]}',
        )
        self.assertEqual(cvp.to_json({"a": (1, None)}), '{"a":[1,null]}')
        self.assertRaises(TypeError, cvp.to_json, object())


class RecordTest(unittest.TestCase):
    def test_value_and_headers_need_declaring(self):
        cvp.reads("title")
        r = cvp.Record(record(value=None, headers=[]))
        self.assertEqual((r.topic, r.key), ("events", b"key"))
        for attr in ("value", "headers"):
            with self.assertRaises(cvp.UndeclaredField):
                getattr(r, attr)
        cvp.reads("value", "headers")
        r = cvp.Record(record(value=b"v", headers=[Header("a", b"1"), Header("a", b"2")]))
        self.assertEqual((r.value, r.header("a"), r.header("b")), (b"v", b"1", None))


class OutputTest(unittest.TestCase):
    def test_patch(self):
        self.assertEqual(cvp.patch(), Patch(None, BytesChange_Keep(), BytesChange_Keep(), None, [], []))
        self.assertEqual(
            cvp.patch(topic="t", key="k", value=None, headers={"a": "1"},
                      set_headers={"b": b"2"}, remove_headers=["c"]),
            Patch("t", BytesChange_Set(b"k"), BytesChange_Null(), [Header("a", b"1")],
                  [Header("b", b"2")], ["c"]),
        )
        self.assertRaises(TypeError, cvp.patch, key=3)

    def test_outputs(self):
        self.assertEqual(cvp.keep(), Output_Keep())
        self.assertEqual(cvp.drop(), Output_Records([]))
        self.assertEqual(cvp.copy_to("audit"), Patch("audit", BytesChange_Keep(), BytesChange_Keep(), None, [], []))
        self.assertEqual(cvp.set_header("s", "x").set_headers, [Header("s", b"x")])

    def test_add_header_keeps_a_same_name_one(self):
        cvp.reads("headers")
        r = cvp.Record(record(headers=[Header("a", b"1")]))
        self.assertEqual(cvp.add_header(r, "a", "2").headers, [Header("a", b"1"), Header("a", b"2")])

    def test_process_converts_and_isolates_failures(self):
        cvp.reads("title")
        results = iter([cvp.keep(), cvp.copy_to("x"), [cvp.patch(), cvp.copy_to("y")], [], None, "oops"])
        outs = cvp.process([inp(title=str(n)) for n in range(6)], lambda e, r: next(results), "t")
        self.assertEqual(outs, [
            Output_Keep(),
            Output_Records([cvp.copy_to("x")]),
            Output_Records([cvp.patch(), cvp.copy_to("y")]),
            Output_Records([]),
            Output_Error("t: TypeError: the transform returned None: return cvp_transform.keep() to pass the record on"),
            Output_Error("t: TypeError: the transform returned a str, not an output or patches"),
        ])

    def test_apply(self):
        rec = record(topic="t", key=b"k", value=b"v",
                     headers=[Header("a", b"1"), Header("b", b"2"), Header("a", b"3"), Header("c", b"4")])
        got = cvp.apply(rec, cvp.patch(topic="u", key=None, set_headers={"a": "9", "d": "5"}, remove_headers=["c"]))
        self.assertEqual((got.topic, got.key, got.value), ("u", None, b"v"))
        self.assertEqual(got.headers, [Header("b", b"2"), Header("a", b"9"), Header("d", b"5")])
        got = cvp.apply(rec, cvp.patch(value="w", headers=[]))
        self.assertEqual((got.topic, got.key, got.value, got.headers), ("t", b"k", b"w", []))


if __name__ == "__main__":
    unittest.main()
