"""cvp_testing: what a native unit test of a Python transform needs.

Not bundled into components. Import it before the app:

    import cvp_testing                  # generates the bindings, fixes sys.path
    cvp_testing.use_bindings(WIT_DIR)   # once, before `import app`
    import app

`use_bindings` runs `componentize-py bindings` (from the same venv as the
running Python) into a temporary folder and puts it, and this folder (for
cvp_transform), on sys.path. Then `event(...)`, `inp(...)` and `host(...)`
build inputs and stand in for the host's imports.
"""

import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source folders clean

HERE = os.path.dirname(os.path.abspath(__file__))
_bindings = None


def use_bindings(wit_dir):
    """Generates the `wit_world` bindings for `wit_dir` (world `transform`)
    and makes them, cvp_transform and cvp_testing importable."""
    global _bindings
    if _bindings is not None:
        return
    _bindings = tempfile.TemporaryDirectory()
    subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "componentize-py"),
            "-d", wit_dir, "-w", "transform", "bindings", _bindings.name,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    sys.path[:0] = [_bindings.name, HERE]


def event(**fields):
    """A generated Event: key "k", severity INFO, times 1, every optional
    field None (undeclared), overridden by `fields`."""
    from wit_world.imports.types import Event, Operation, Severity

    values = dict(
        key="k", timestamp=1, operation=Operation.UPDATED, severity=Severity.INFO,
        severity_code=2, last_updated_time=1, delete_time=0, title=None,
        description=None, event_type=None, rule_id=None, data=None,
        components=None, metadata=None, json=None, devices=None,
        interfaces=None, link=None,
    )
    values.update(fields)
    return Event(**values)


def record(topic="events", key=b"key", value=None, headers=()):
    """A generated Outgoing record (value None, as when "value" is undeclared)."""
    from wit_world.imports.types import Outgoing

    return Outgoing(topic=topic, key=key, value=value, headers=list(headers))


def inp(ev=None, rec=None, **fields):
    """An Input of `ev` (or event(**fields)) and `rec` (or record())."""
    from wit_world.imports.types import Input

    return Input(ev if ev is not None else event(**fields), rec if rec is not None else record())


def device(id, hostname=None, tags=(), **fields):
    """A generated Device; `tags` as (label, value) pairs (creator USER)."""
    from wit_world.imports.types import Device, StreamingStatus

    values = dict(
        id=id, hostname=hostname, fqdn=None, model=None, software_version=None,
        hardware_revision=None, system_mac_address=None,
        streaming_status=StreamingStatus.ACTIVE, tags=_tags(tags),
    )
    values.update(fields)
    return Device(**values)


def interface(device_id, interface_id, tags=()):
    """A generated Interface; `tags` as (label, value) pairs."""
    from wit_world.imports.types import Interface

    return Interface(device_id=device_id, interface_id=interface_id, tags=_tags(tags))


def _tags(pairs):
    from wit_world.imports.types import Tag, TagCreator

    return [Tag(label=k, value=v, creator=TagCreator.USER) for k, v in pairs]


def host(**config):
    """Stands in for the host: config() gives `config` (lists and maps as
    JSON text, as the host does) and log() appends (level, message) to the
    returned list."""
    from wit_world.imports import host as imports

    logs = []
    imports.config = lambda: [
        (k, v if isinstance(v, str) else json.dumps(v)) for k, v in config.items()
    ]
    imports.log = lambda level, msg: logs.append((level, msg))
    return logs
