"""A VM's serial console log as operations (``vm.log``, ``vm.log_follow``), over the reading API of
``pvc.console_log``: read once, or followed (a stream: Server-Sent Events through the REST API, at
``/vm/{vm}/log/follow`` and ``/vm/{vm}/log?follow=true``).

The follower's events (``console_log.Lines | Partial | Missed | Notice``) travel as one tagged
record, ``ConsoleItem``, so a client decodes them with one type; ``event`` gives the original back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

import msgspec

from pvc import console_log, store
from pvc.errors import InvalidInput
from pvc.ops.registry import Context, operation


class LogQuery(msgspec.Struct, kw_only=True):
    vm: str  # name or UUID
    lines: int | None = None  # the last N complete lines (default: all the buffer holds)


class VmLog(msgspec.Struct, kw_only=True):
    vm: str  # its name
    console_log_file: str  # "" = its serial console is not logged (the log stays empty)
    first: int  # sequence number of lines[0]
    lines: list[str]
    partial: str  # the unterminated last line


class FollowQuery(msgspec.Struct, kw_only=True):
    vm: str
    lines: int = 10  # lines of backlog before the new ones


class ConsoleItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``kind``: ``lines`` (``first``, ``lines``), ``partial`` (``text``), ``missed`` (``count``) or
    ``notice`` (``notice``: following, stopped, starting, moved, undefined; ``text``)."""

    kind: str
    first: int = 0
    lines: list[str] = []
    text: str = ""
    count: int = 0
    notice: str = ""

    def event(self) -> console_log.ConsoleEvent:
        if self.kind == "lines":
            return console_log.Lines(self.first, self.lines)
        if self.kind == "partial":
            return console_log.Partial(self.text)
        if self.kind == "missed":
            return console_log.Missed(self.count)
        return console_log.Notice(self.notice, self.text)


def item(event: console_log.ConsoleEvent) -> ConsoleItem:
    if isinstance(event, console_log.Lines):
        return ConsoleItem(kind="lines", first=event.first, lines=list(event.lines))
    if isinstance(event, console_log.Partial):
        return ConsoleItem(kind="partial", text=event.text)
    if isinstance(event, console_log.Missed):
        return ConsoleItem(kind="missed", count=event.count)
    return ConsoleItem(kind="notice", notice=event.kind, text=event.text)


def _check_lines(lines: int | None) -> None:
    if lines is not None and lines < 0:
        raise InvalidInput(f"lines must be 0 or more, not {lines}")


@operation("vm.log", "GET", "/vm/{vm}/log")
async def read(ctx: Context, params: LogQuery) -> VmLog:
    """A VM's serial console log: the last lines its buffer holds."""
    _check_lines(params.lines)
    uuid = await store.resolve_domain(ctx.zk, params.vm)
    dom, _ = await store.read_domain(ctx.zk, uuid)
    log = await console_log.read_lines(ctx.zk, uuid, params.lines)
    return VmLog(vm=dom.name, console_log_file=dom.console_log_file, first=log.first, lines=list(log.lines),
                 partial=log.partial)


@operation("vm.log_follow", "GET", "/vm/{vm}/log/follow", stream=True)
async def follow(ctx: Context, params: FollowQuery) -> AsyncIterator[ConsoleItem]:
    """A VM's console log followed: the backlog, then each new line as it is stored, in order, each once."""
    _check_lines(params.lines)
    uuid = await store.resolve_domain(ctx.zk, params.vm)
    async with aclosing(console_log.follow(ctx.zk, uuid, params.lines)) as events:
        async for event in events:
            yield item(event)
