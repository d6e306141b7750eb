"""{{name}}: a cvp-stream transform written in Python.

As generated, it passes every record on with a header `x-transform: {{name}}`
added, and drops events less severe than the `min_severity` config key when
one is given. Change `transform` below to make it do what you need.

Built into a WebAssembly component by build.sh (componentize-py 0.25.1). The
`wit_world` package is generated from wit/transform.wit at build time; to read
it: `.venv/bin/componentize-py -d wit -w transform bindings bindings/`.
How the contract looks from Python:
  - records are dataclasses with snake_case fields (`event.event_type`,
    `event.severity_code`, `inp.record`); `list<u8>` is `bytes`,
    `option<T>` is `T | None`, tuples are tuples, enums are `Enum`s
    (`Severity.ERROR`);
  - an output is `Output_Records([record, ...])` (an empty list drops the
    input) or `Output_Error("message")`;
  - `init` returns `result<_, string>`: raising `Err("message")` is `err`.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Header, Output_Error, Output_Records, Severity

NAME = "{{name}}"

# componentize-py creates a new Transformer object for every call from the
# host, so state set in `init` must live at module level, not on `self`.
_min_severity = None  # a Severity, or None to keep every event


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


def severity_at_least(event, minimum):
    """Whether the event is at least as severe as `minimum`. A severity newer
    than this contract (`unspecified` with a non-zero code) counts as severe
    enough: better to pass on an alert nobody understands than to drop it."""
    if event.severity == Severity.UNSPECIFIED and event.severity_code != 0:
        return True
    # Severity's values follow the WIT order, least severe first.
    return event.severity.value >= minimum.value


def transform(event, record):
    """Turns one event and the record produced for it so far into the list of
    records to produce: [record] to pass it on (changed or not), [] to drop
    it, several to fan out. Raise an exception when this event cannot be
    transformed: the host applies the transform's `on_error` policy.

    `record` has `topic` (str), `key` and `value` (bytes, or None for a Kafka
    null) and `headers` (a list of Header(key=str, value=bytes)). The first
    transform in a chain gets the default record: the configured topic,
    key = event key, value = the event as JSON, no headers.
    """
    # Filter.
    if _min_severity is not None and not severity_at_least(event, _min_severity):
        return []

    # Rewrite. Change topic, key or value here too, e.g.
    #   record.key = event.title.encode()
    # The event's fields: event.key, event.severity, event.title,
    # event.description, event.event_type, event.data (list of (name, value)).
    record.headers.append(Header(key="x-transform", value=NAME.encode()))
    return [record]


class Transformer(exports.Transformer):
    def init(self):
        """Runs once before the first batch. host.config() is this
        transform's `config:` map as (key, value) pairs: scalars as text,
        lists and maps as JSON text (json.loads them). Raising Err stops the
        host's start-up (and `cvp-stream validate`) with the message, so name
        the key and the value. Read your own config keys here."""
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

    def process(self, batch):
        """Must return exactly one output per input, in the same order."""
        out = []
        for inp in batch:
            try:
                out.append(Output_Records(transform(inp.event, inp.record)))
            except Exception as e:  # one bad event must not cost the batch
                out.append(Output_Error(f"{NAME}: {type(e).__name__}: {e}"))
        return out
