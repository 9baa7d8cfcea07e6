"""Event log operations (``event.*``): the cluster's event log (pvc.events), filtered by VM, node and
time; read once (``event.list``) or followed (``event.follow``, a children watch on the log)."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import AsyncIterator

import msgspec

from pvc import events
from pvc.errors import InvalidInput
from pvc.ops.registry import Context, operation
from pvc.schema import Event

DEFAULT_LINES = 20
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class EventQuery(msgspec.Struct, kw_only=True):
    vm: str = ""  # only events of this VM (by name)
    node: str = ""  # only events of this node
    since: str = ""  # only events since: a duration back from now (30s, 10m, 2h, 1d) or an ISO 8601 time (UTC unless it has an offset)
    lines: int = DEFAULT_LINES  # the newest N events that match (following: then every new one)


def since_time(text: str, now: float, naive_local: bool = False) -> float:
    """``--since`` as a Unix time: a duration back from ``now``, or an ISO 8601 time (without an
    offset: UTC, or with ``naive_local`` the local time zone, for the CLI's user)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if m:
        return now - float(m[1]) * _UNITS[m[2]]
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"since {text!r}: expected a duration (30s, 10m, 2h, 1d, 1w) or an ISO 8601 time "
                           "(2026-11-30T10:00:00)") from None
    if when.tzinfo is None:
        when = when.astimezone() if naive_local else when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _filter(params: EventQuery):
    if params.lines < 0:
        raise InvalidInput(f"lines must be 0 or more, not {params.lines}")
    since = since_time(params.since, time.time()) if params.since else None

    def keep(e: Event) -> bool:
        return ((not params.vm or e.vm == params.vm) and (not params.node or e.node == params.node)
                and (since is None or e.time >= since))

    return keep


@operation("event.list", "GET", "/events")
async def list_events(ctx: Context, params: EventQuery) -> list[Event]:
    """The newest events that match, oldest first."""
    keep = _filter(params)
    found = [e for _, e in await events.recent(ctx.zk, events.KEPT) if keep(e)]
    return found[-params.lines:] if params.lines else []


@operation("event.follow", "GET", "/events/follow", stream=True)
async def follow(ctx: Context, params: EventQuery) -> AsyncIterator[Event]:
    """The newest events that match, then every new one that matches as it is written."""
    keep = _filter(params)
    async for event in events.follow(ctx.zk, params.lines, keep):
        yield event
