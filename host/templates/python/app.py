"""{{name}}: a cvp-stream transform written in Python.

As generated, it passes every record on with a header `x-transform: {{name}}`
added, and drops events less severe than the `min_severity` config key when
one is given. Change `transform` below (and READS) to make it do what you need.

Built into a WebAssembly component by build.sh (componentize-py 0.25.1), for
the contract in wit/transform.wit (cvp-stream:transform@0.2.0). The helpers
in cvp_transform.py (`cvp` below) are bundled with it; its docstrings say
what each does. The `wit_world` package is generated from the contract at
build time; to read it:
`.venv/bin/componentize-py -d wit -w transform bindings bindings/`.
"""

import cvp_transform as cvp
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Severity

NAME = "{{name}}"

# The fields `transform` reads. The host fills only these, so a transform
# pays only for what it uses; reading any other raises cvp.UndeclaredField,
# naming it. Always there without asking: key, timestamp, operation,
# severity, severity_code, last_updated_time, delete_time, and the record's
# topic and key. To ask for: "title", "description", "event-type",
# "rule-id", "data" (or "data.deviceId", ... one entry each), "components",
# "metadata", "json" (the whole event as protobuf JSON), "devices" and
# "interfaces" (CloudVision's inventory records, with tags), "link", and the
# record's "value" and "headers".
READS = []

# componentize-py creates a new Transformer object for every call from the
# host, so state set in `init` must live at module level, not on `self`.
_min_severity = None  # a Severity, or None to keep every event
_tagged = cvp.set_header("x-transform", NAME)  # built once, shared


def parse_min_severity(text):
    """`warning` (any case) -> Severity.WARNING; ValueError naming the key."""
    try:
        severity = Severity[text.strip().upper()]
    except KeyError:
        severity = None
    if severity is None or severity == Severity.UNSPECIFIED:
        raise ValueError(
            f"min_severity: invalid value {text!r} "
            "(expected debug, info, warning, error or critical)"
        )
    return severity


def transform(event, record):
    """What to produce for one event (a cvp.Event) and its record so far (a
    cvp.Record: topic, key; value and headers when declared). Return

      cvp.keep()                  the record unchanged
      cvp.drop()                  no record
      cvp.patch(topic=..., key=..., value=..., set_headers={...})
                                  the record with changes (str or bytes;
                                  None is a Kafka null)
      [patch, patch, ...]         several records (fan out), e.g.
                                  [cvp.patch(), cvp.copy_to("audit")]

    Raise an exception when this event cannot be transformed: the host
    applies the transform's `on_error` policy. Lookups: event.title,
    event.data_field("deviceId"), event.device_id(),
    event.device(id).hostname, cvp.tag(event.device(id), "site").
    """
    # Filter.
    if _min_severity is not None and not event.severity_at_least(_min_severity):
        return cvp.drop()

    # Rewrite, e.g. (after adding "title" to READS):
    #   return cvp.patch(key=event.title, set_headers={"x-transform": NAME})
    return _tagged


class Transformer(exports.Transformer):
    def init(self):
        """Runs once before the first batch; returns the fields it reads.
        host.config() is this transform's `config:` map as (key, value)
        pairs: scalars as text, lists and maps as JSON text (json.loads
        them). Raising Err stops the host's start-up (and `cvp-stream
        validate`) with the message, so name the key and the value. Read
        your own config keys here."""
        global _min_severity
        config = dict(host.config())
        try:
            if "min_severity" in config:
                _min_severity = parse_min_severity(config["min_severity"])
        except ValueError as e:
            raise Err(str(e))
        host.log(
            host.Level.DEBUG,
            f"{NAME}: dropping events below {_min_severity.name.lower()}"
            if _min_severity is not None
            else f"{NAME}: keeping every event",
        )
        return cvp.reads(*READS)

    def process(self, batch):
        """One output per input, in order; an exception for one event is that
        event's error, not the batch's."""
        return cvp.process(batch, transform, NAME)
