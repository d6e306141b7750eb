"""site-enrich: a cvp-stream transform written in Python.

Adds a Kafka header (default name `site`) to every record, naming the site of
the device the event is about, from a mapping given in the transform's config:

    sites:   JSON object deviceId -> site name (required)
    default: site for devices not in `sites` (optional; without it such
             records are passed on unchanged)
    header:  the header's name (optional, default `site`)

The record is otherwise left as it is. Built into a component with
componentize-py (see build.sh), for the contract cvp-stream:transform@0.2.0;
the `wit_world` package is generated from ../../../wit at build time and
cvp_transform.py (../sdk) is bundled beside this file.
"""

import json

import cvp_transform as cvp
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host

# All the event this transform reads: the device is named by `data.deviceId`
# or a component's `deviceId`. The header is set with a patch, so neither the
# record's value nor its headers need to cross the boundary.
READS = ["data.deviceId", "components"]


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


class Enricher:
    """The per-record logic, free of any host call so it can be tested alone."""

    def __init__(self, header, sites, default):
        # One output per site, built once and shared by the records of that
        # site: the per-event work is a lookup. set_header makes the host
        # replace a header of the same name (e.g. from an earlier transform)
        # rather than add a second one.
        cache = {}

        def patch_for(site):
            if site not in cache:
                cache[site] = cvp.output(cvp.set_header(header, site))
            return cache[site]

        self.by_device = {device: patch_for(site) for device, site in sites.items()}
        self.default = patch_for(default) if default is not None else cvp.keep()

    def enrich(self, event, record):
        """The output for one event (a cvp.Event): the site header, or the
        record unchanged for an unknown device without a default."""
        return self.by_device.get(event.device_id(), self.default)


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
        reads = cvp.reads(*READS)
        host.log(
            host.Level.DEBUG,
            f"site-enrich: {len(sites)} devices mapped, header `{header}`, "
            + (f"default `{default}`" if default is not None else "no default"),
        )
        return reads

    def process(self, batch):
        return cvp.process(batch, _enricher.enrich, "site-enrich")
