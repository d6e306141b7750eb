"""cvp_transform: helpers for cvp-stream transforms written in Python.

For the contract cvp-stream:transform@0.2.0 (wit/transform.wit), built with
componentize-py 0.25.1. One file, no dependencies beyond the generated
`wit_world` bindings: copy it next to your app.py (build.sh does) and

    import cvp_transform as cvp

    READS = cvp.reads("title", "data.deviceId", "components", "devices")

    def transform(event, record):          # event: cvp.Event, record: cvp.Record
        device = event.device(event.device_id())
        if device is None:
            return cvp.keep()
        return cvp.set_header("hostname", device.hostname or device.id)

    class Transformer(exports.Transformer):
        def init(self):
            return READS                  # the host fills only these fields

        def process(self, batch):
            return cvp.process(batch, transform, "my-transform")

What it gives:

- `reads(...)`: the field names `init` returns, checked and remembered, so
  that reading an undeclared field raises `UndeclaredField` (naming the field
  and saying to add it) instead of quietly giving None: the host leaves
  every undeclared field `none`, which looks just like "CVP left it unset".
- `Event` and `Record`: views of the input that enforce that, with lookups
  for a `data` field, a component field, the device and interface records
  (and `tag()` / `tag_values()` for their tags) and the event's JSON.
- `keep()`, `drop()`, `patch(...)`, `set_header()`, `add_header()`,
  `copy_to()`: the outputs, as changes to the input's record.
- `process(batch, fn, name)`: one output per input, an exception in one
  event becoming that event's `error` output rather than a trap.
- `to_json(value)`: JSON text of what the bindings give (dataclasses, enums,
  bytes), e.g. an event.
- `apply(record, patch)`: what the host makes of a record and a patch, for
  unit tests that run natively.
"""

import dataclasses as _dataclasses
import enum as _enum
import json as _json

from wit_world.imports.types import (
    BytesChange_Keep,
    BytesChange_Null,
    BytesChange_Set,
    Header,
    Outgoing,
    Output_Error,
    Output_Keep,
    Output_Records,
    Patch,
    Severity,
)

# The names `init` may return (wit/transform.wit), besides "data.NAME".
FIELDS = frozenset((
    "title", "description", "event-type", "rule-id", "data", "components",
    "metadata", "json", "devices", "interfaces", "link", "value", "headers",
))

# Event attributes (snake case, as the bindings name them) that are filled
# only when declared, and the name that declares each.
_OPTIONAL = {
    "title": "title",
    "description": "description",
    "event_type": "event-type",
    "rule_id": "rule-id",
    "data": "data",
    "components": "components",
    "metadata": "metadata",
    "json": "json",
    "devices": "devices",
    "interfaces": "interfaces",
    "link": "link",
}
# Event attributes the host always fills.
_ALWAYS = frozenset((
    "key", "timestamp", "operation", "severity", "severity_code",
    "last_updated_time", "delete_time",
))

# What this transform declared; set by reads(). Module level because
# componentize-py makes a new Transformer object for every host call.
_declared = frozenset()
_any_data = False  # "data" or some "data.NAME" was declared


class UndeclaredField(Exception):
    """A field was read that the transform did not declare in `init`.

    Deliberately not an AttributeError or a KeyError: `getattr(x, name,
    default)`, `hasattr` or a `dict.get`-style fallback would swallow those
    and bring back the silent None this error exists to prevent.
    """

    def __init__(self, name):
        self.field = name
        super().__init__(
            f'field "{name}" was read but not declared: add "{name}" to the '
            "reads list that init returns (cvp_transform.reads(...))"
        )


def reads(*names):
    """Declares the fields the transform reads and returns them as the list
    `init` returns. Raises ValueError for a name the contract does not have,
    so a typo fails in a unit test rather than at the host's start-up."""
    global _declared, _any_data
    unique = list(dict.fromkeys(names))  # keeps the order, drops repeats
    for name in unique:
        if not isinstance(name, str) or not (
            name in FIELDS or (name.startswith("data.") and len(name) > 5)
        ):
            raise ValueError(
                f"reads: unknown field {name!r} (expected data.NAME or one of "
                + ", ".join(sorted(FIELDS)) + ")"
            )
    _declared = frozenset(unique)
    _any_data = any(n == "data" or n.startswith("data.") for n in unique)
    return unique


def declared(name):
    """Whether `name` ("title", "data.deviceId", ...) was declared; "data"
    covers every "data.NAME"."""
    if name.startswith("data."):
        return name in _declared or "data" in _declared
    return name in _declared


def _need(name):
    if not declared(name):
        raise UndeclaredField(name)


def tag_values(entity, label):
    """The values of `entity`'s tags with this label, in order (a device or
    an interface; a label can carry several values)."""
    return [t.value for t in entity.tags if t.label == label]


def tag(entity, label, default=None):
    """The first value of `entity`'s tag with this label, or `default`."""
    for t in entity.tags:
        if t.label == label:
            return t.value
    return default


class Event:
    """A view of one event that raises UndeclaredField on reading a field
    the transform did not declare. Attributes are those of the generated
    `Event` (snake case: `event_type`, `severity_code`); a declared field
    CVP left unset is None. The generated object itself is `.raw`."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    def __getattr__(self, attr):
        # Called only for names that are not slots or methods.
        name = _OPTIONAL.get(attr)
        if name is not None:
            if name == "data" and _any_data:
                return self.raw.data
            _need(name)
            return getattr(self.raw, attr)
        if attr in _ALWAYS:
            return getattr(self.raw, attr)
        raise AttributeError(f"an event has no field {attr!r}")

    def __repr__(self):
        return f"cvp_transform.Event({self.raw!r})"

    def data_field(self, name, default=None):
        """The `data` entry `name` (e.g. "deviceId"); needs "data.NAME" or
        "data" declared."""
        _need("data." + name)
        for k, v in self.raw.data or ():
            if k == name:
                return v
        return default

    def component_field(self, name, default=None):
        """The first field `name` (e.g. "deviceId", "interfaceId") of the
        event's components, in order; needs "components"."""
        _need("components")
        for c in self.raw.components or ():
            for k, v in c.fields:
                if k == name:
                    return v
        return default

    def device_id(self):
        """The device the event is about: its `data` entry `deviceId`, else
        the first component field `deviceId`; None if neither. Needs
        "data.deviceId" and "components"."""
        _need("components")  # checked up front, not only when data lacks it
        return self.data_field("deviceId") or self.component_field("deviceId")

    def interface_id(self):
        """Like device_id(), for `interfaceId`. Needs "data.interfaceId" and
        "components"."""
        _need("components")
        return self.data_field("interfaceId") or self.component_field("interfaceId")

    def device(self, device_id):
        """The inventory's record of the device with this id (serial), with
        `.hostname`, `.model`, ... and `.tags`; None when the event does not
        carry it (the inventory does not know it). Needs "devices"."""
        _need("devices")
        for d in self.raw.devices or ():
            if d.id == device_id:
                return d
        return None

    def interface(self, device_id, interface_id):
        """The interface with these ids, with `.tags`; None when the event
        does not carry it. Needs "interfaces"."""
        _need("interfaces")
        for i in self.raw.interfaces or ():
            if i.device_id == device_id and i.interface_id == interface_id:
                return i
        return None

    def json(self):
        """The whole event in the protobuf JSON mapping, parsed (a dict);
        None if the host sent none. Needs "json"."""
        _need("json")
        raw = self.raw.json
        return None if raw is None else _json.loads(raw)

    def severity_at_least(self, minimum):
        """Whether the event is at least as severe as `minimum` (a
        Severity). A severity newer than the contract (`UNSPECIFIED` with a
        non-zero code) counts as severe enough: better to pass on an alert
        nobody understands than to drop it."""
        severity = self.raw.severity
        if severity == Severity.UNSPECIFIED and self.raw.severity_code != 0:
            return True
        return severity.value >= minimum.value  # WIT order, least severe first


class Record:
    """A view of the input's record (`topic`, `key`, `value`, `headers`) that
    raises UndeclaredField for `value` and `headers` unless "value" and
    "headers" were declared. The generated object itself is `.raw`."""

    __slots__ = ("raw",)

    def __init__(self, raw):
        self.raw = raw

    @property
    def topic(self):
        return self.raw.topic

    @property
    def key(self):
        """bytes, or None for a Kafka null."""
        return self.raw.key

    @property
    def value(self):
        """bytes, or None for a Kafka null. Needs "value"."""
        _need("value")
        return self.raw.value

    @property
    def headers(self):
        """The list of Header(key, value: bytes). Needs "headers"."""
        _need("headers")
        return self.raw.headers

    def header(self, key, default=None):
        """The value (bytes) of the first header named `key`. Needs "headers"."""
        for h in self.headers:
            if h.key == key:
                return h.value
        return default

    def __repr__(self):
        return f"cvp_transform.Record({self.raw!r})"


def _bytes(value, what):
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, got {type(value).__name__}")


def _headers(given):
    """Header list from a {name: str|bytes} mapping or an iterable of Header."""
    if given is None:
        return None
    if hasattr(given, "items"):
        return [Header(key=k, value=_bytes(v, f"header {k!r}")) for k, v in given.items()]
    return list(given)


class _Keep:
    def __repr__(self):
        return "cvp_transform.KEEP"


KEEP = _Keep()
"""The default of `patch(key=..., value=...)`: leave it as it is."""

_BYTES_KEEP = BytesChange_Keep()
_BYTES_NULL = BytesChange_Null()


def _change(value, what):
    if value is KEEP:
        return _BYTES_KEEP
    if value is None:
        return _BYTES_NULL
    return BytesChange_Set(_bytes(value, what))


def patch(*, topic=None, key=KEEP, value=KEEP, headers=None, set_headers=None,
          remove_headers=()):
    """One record to produce, as changes to the input's record; every
    argument left out leaves that part as it is.

    topic:          another topic
    key, value:     str or bytes to set, None for a Kafka null
    headers:        replace every header ({name: value} or a list of Header)
    set_headers:    add these last, each replacing the headers of the same name
    remove_headers: remove the headers with these names
    """
    return Patch(
        topic=topic,
        key=_change(key, "key"),
        value=_change(value, "value"),
        headers=_headers(headers),
        set_headers=_headers(set_headers) or [],
        remove_headers=list(remove_headers),
    )


def keep():
    """Output: the input's record, unchanged."""
    return Output_Keep()


def drop():
    """Output: no record for this input."""
    return Output_Records([])


def set_header(name, value):
    """A patch setting one header: the host removes any header of that name
    and adds this one last. Needs no declared field."""
    return patch(set_headers={name: value})


def add_header(record, name, value):
    """A patch adding a header even when one of that name exists (Kafka
    allows repeats). `record` is the input's Record; needs "headers"."""
    return patch(headers=[*record.headers, Header(key=name, value=_bytes(value, name))])


def copy_to(topic):
    """A patch sending the record to `topic`. Return [patch(), copy_to(t)]
    to keep the original and add a copy."""
    return patch(topic=topic)


def output(result):
    """A transform function's result as an Output: an Output as it is, one
    Patch as that record, a list of Patches as those records ([] drops)."""
    if isinstance(result, (Output_Keep, Output_Records, Output_Error)):
        return result
    if isinstance(result, Patch):
        return Output_Records([result])
    if isinstance(result, (list, tuple)):
        for p in result:
            if not isinstance(p, Patch):
                raise TypeError(f"a record must be a Patch (cvp_transform.patch), got {type(p).__name__}")
        return Output_Records(list(result))
    if result is None:
        # A forgotten `return` must not pass records through unnoticed.
        raise TypeError("the transform returned None: return cvp_transform.keep() to pass the record on")
    raise TypeError(f"the transform returned a {type(result).__name__}, not an output or patches")


def process(batch, transform, name=""):
    """Runs `transform(Event, Record)` on every input of the batch and
    returns one output per input, in order. An exception for one event
    becomes that event's `error` output (the host applies `on_error`),
    "NAME: ExceptionType: message", instead of trapping the instance."""
    prefix = f"{name}: " if name else ""
    out = []
    for inp in batch:
        try:
            out.append(output(transform(Event(inp.event), Record(inp.record))))
        except Exception as e:  # one bad event must not cost the batch
            out.append(Output_Error(f"{prefix}{type(e).__name__}: {e}"))
    return out


def _plain(value):
    # json.dumps calls this for what it cannot render itself.
    if isinstance(value, (Event, Record)):
        return value.raw
    if _dataclasses.is_dataclass(value):
        # Fields left None (undeclared, or unset) are left out, as
        # JSON.stringify leaves out undefined.
        return {
            f.name: getattr(value, f.name)
            for f in _dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, _enum.Enum):
        return value.name.lower()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value):
    """Compact JSON text of `value`, which may hold what the bindings give:
    dataclasses (an Event, a Device; None fields left out), enums (their
    lower-case name, `"error"`), bytes (their UTF-8 text), tuples (arrays).
    Timestamps are ints, exact."""
    return _json.dumps(value, default=_plain, separators=(",", ":"), ensure_ascii=False)


def apply(record, change):
    """The Outgoing record the host makes of `record` (Outgoing or Record)
    with `change` (a Patch) applied, for unit tests. Changes apply in field
    order: topic, key, value, headers, set_headers, remove_headers."""
    if isinstance(record, Record):
        record = record.raw
    topic = change.topic if change.topic is not None else record.topic
    key, value = record.key, record.value
    for name, c in (("key", change.key), ("value", change.value)):
        if isinstance(c, BytesChange_Null):
            new = None
        elif isinstance(c, BytesChange_Set):
            new = c.value
        else:
            continue
        if name == "key":
            key = new
        else:
            value = new
    headers = list(change.headers if change.headers is not None else record.headers)
    for h in change.set_headers:
        # As the host does: every header of that key goes, the new one is last.
        headers = [old for old in headers if old.key != h.key]
        headers.append(h)
    remove = set(change.remove_headers)
    headers = [h for h in headers if h.key not in remove]
    return Outgoing(topic=topic, key=key, value=value, headers=headers)
