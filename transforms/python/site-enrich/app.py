"""site-enrich: a cvp-stream transform written in Python.

Adds a Kafka header (default name `site`) to every record, naming the site of
the device the event is about, from a mapping given in the transform's config:

    sites:   JSON object deviceId -> site name (required)
    default: site for devices not in `sites` (optional; without it such
             records get no header)
    header:  the header's name (optional, default `site`)

The record is otherwise left as it is. Built into a component with
componentize-py (see build.sh); the `wit_world` package is generated from
../../../wit at build time.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import Header, Output_Error, Output_Records

DEVICE_ID = "deviceId"


def parse_config(pairs):
    """Turns the host's config pairs into (header name, {device: site}, default).

    Raises ValueError with a message naming the offending key.
    """
    config = dict(pairs)

    raw = config.get("sites")
    if raw is None:
        raise ValueError(
            "config key `sites` is missing: give a map of deviceId to site name, "
            "e.g. sites: { JPE19181520: dc1 }"
        )
    try:
        sites = json.loads(raw)
    except ValueError:
        sites = None
    if not isinstance(sites, dict):
        raise ValueError(
            f"config key `sites` must be a map of deviceId to site name, got {raw!r}"
        )
    for device, site in sites.items():
        if not isinstance(site, str):
            raise ValueError(
                f"config key `sites`: the site of device {device!r} must be a string, "
                f"got {json.dumps(site)}"
            )

    header = config.get("header", "site")
    if not header:
        raise ValueError("config key `header` must not be empty")

    default = config.get("default") or None
    return header, sites, default


def device_id(event):
    """The event's device: `data` entry `deviceId`, else the first component
    field `deviceId`; None if there is neither."""
    for name, value in event.data:
        if name == DEVICE_ID:
            return value
    for component in event.components:
        for name, value in component.fields:
            if name == DEVICE_ID:
                return value
    return None


class Enricher:
    """The per-record logic, free of any host call so it can be tested alone."""

    def __init__(self, header, sites, default):
        self.header = header
        # One Header object per site, built once: records share them, so the
        # per-event work is a lookup and a list append.
        cache = {}

        def header_for(site):
            if site not in cache:
                cache[site] = Header(key=header, value=site.encode())
            return cache[site]

        self.by_device = {device: header_for(site) for device, site in sites.items()}
        self.default = header_for(default) if default is not None else None

    def enrich(self, inp):
        """Returns the input's record with the site header set (in place)."""
        record = inp.record
        found = self.by_device.get(device_id(inp.event), self.default)
        if found is not None:
            headers = record.headers
            # Replace a header of the same name (e.g. set by an earlier
            # transform) rather than add a second one.
            for i, h in enumerate(headers):
                if h.key == self.header:
                    headers[i] = found
                    break
            else:
                headers.append(found)
        return record


# componentize-py creates a fresh Transformer object for every call from the
# host, so state that must outlive `init` lives at module level.
_enricher = None


class Transformer(exports.Transformer):
    def init(self):
        global _enricher
        try:
            header, sites, default = parse_config(host.config())
        except ValueError as e:
            raise Err(str(e))
        _enricher = Enricher(header, sites, default)
        host.log(
            host.Level.DEBUG,
            f"site-enrich: {len(sites)} devices mapped, header `{header}`, "
            + (f"default `{default}`" if default is not None else "no default"),
        )

    def process(self, batch):
        enrich = _enricher.enrich
        out = []
        for inp in batch:
            try:
                out.append(Output_Records([enrich(inp)]))
            except Exception as e:  # one bad event must not cost the batch
                out.append(Output_Error(f"site-enrich: {type(e).__name__}: {e}"))
        return out
