"""Operations by name: how they are declared, found, called and audited.

A declaration carries what the REST API and its OpenAPI document need (method, path under
``/api/v1``, the params and result types), so the CLI, the API and the document cannot disagree.
Path placeholders (``/vm/{vm}/start``) are fields of the params Struct; the other fields come from
the query string (GET) or the JSON body.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

import msgspec

from pvc.errors import Forbidden, NotFound, PvcError

# Operation group -> the modules declaring its operations, imported on first use (a CLI run imports
# only what its command calls: `pvc vm info` does not pay for the console-log reader).
GROUPS: dict[str, tuple[str, ...]] = {
    "vm": ("pvc.ops.vm", "pvc.ops.vm_volume", "pvc.ops.vm_log"),
    **{group: (f"pvc.ops.{group}",) for group in ("node", "network", "cluster", "storage", "token", "event",
                                                 "nodelog", "flush")},
}


class Context:
    """Who asks, and through what: ``actor`` is ``zookeeper`` for direct access, ``token:NAME`` via
    the API. ``read_only`` callers may only call operations that change nothing. ``extras``: e.g. a
    Ceph handle for storage operations. (Plain classes here, not dataclasses: each costs a CLI start
    about a millisecond.)"""

    def __init__(self, zk: Any, actor: str = "zookeeper", read_only: bool = False,
                 extras: dict[str, Any] | None = None) -> None:
        self.zk, self.actor, self.read_only, self.extras = zk, actor, read_only, extras if extras is not None else {}


class Operation(NamedTuple):
    name: str
    method: str  # GET for reads; POST/PUT/PATCH/DELETE for changes
    path: str  # under /api/v1
    func: Callable[..., Any]
    params: type
    result: Any
    summary: str
    stream: bool  # an async generator: the API answers with Server-Sent Events

    @property
    def changes(self) -> bool:
        return self.method != "GET"


OPERATIONS: dict[str, Operation] = {}

# Called after every operation with (name, outcome): "ok" or the error's class name (metrics).
observers: list[Callable[[str, str], None]] = []


def operation(name: str, method: str, path: str, *, stream: bool = False):
    """Declare ``func(ctx, params) -> result`` as operation ``name`` served at ``method path``."""

    def register(func):
        hints = typing.get_type_hints(func)
        result = hints.get("return", Any)
        if stream:  # AsyncIterator[X] -> X
            result = typing.get_args(result)[0] if typing.get_args(result) else Any
        summary = (func.__doc__ or name).strip().splitlines()[0]
        OPERATIONS[name] = Operation(name, method.upper(), path, func, hints["params"], result, summary, stream)
        return func

    return register


def find(name: str) -> Operation:
    """The operation ``name``, importing its group's modules on first use (keeps the CLI quick)."""
    for module in GROUPS.get(name.split(".", 1)[0], ()):
        if name in OPERATIONS:
            break
        importlib.import_module(module)
    try:
        return OPERATIONS[name]
    except KeyError:
        raise NotFound(f"unknown operation {name!r}") from None


def load_all() -> dict[str, Operation]:
    for modules in GROUPS.values():
        for module in modules:
            importlib.import_module(module)
    return OPERATIONS


def _notify(name: str, outcome: str) -> None:
    for observe in observers:
        observe(name, outcome)


async def call(ctx: Context, name: str, params: Any) -> Any:
    """Run a (non-stream) operation; a change is audited in the event log with its outcome."""
    op = find(name)
    if op.changes and ctx.read_only:
        _notify(name, "Forbidden")
        raise Forbidden(f"a read-only credential cannot {name}")
    try:
        result = await op.func(ctx, params)
    except PvcError as exc:
        _notify(name, type(exc).__name__)
        if op.changes:
            await _audit(ctx, op, params, f"error: {exc}")
        raise
    _notify(name, "ok")
    if op.changes:
        await _audit(ctx, op, params, "ok", result)
    return result


def stream(ctx: Context, name: str, params: Any) -> AsyncIterator[Any]:
    """An operation's items as they come (logs, events, progress)."""
    op = find(name)
    if not op.stream:
        raise NotFound(f"{name} is not a stream")
    if op.changes and ctx.read_only:
        raise Forbidden(f"a read-only credential cannot {name}")
    return op.func(ctx, params)


async def _audit(ctx: Context, op: Operation, params: Any, outcome: str, result: Any = None) -> None:
    from pvc import events

    args = {k: v for k, v in msgspec.to_builtins(params).items() if v not in ("", None, False, [], {})}
    # A domain XML is no argument to read in a log line (and could outgrow the event record).
    args = {k: f"<{len(v)} characters>" if isinstance(v, str) and len(v) > 200 else v for k, v in args.items()}
    shown = " ".join(f"{k}={v}" for k, v in args.items())
    try:
        await events.record(ctx.zk, "operation", f"{op.name} {shown}".strip() + f": {outcome}",
                            severity="info" if outcome == "ok" else "warning",
                            # A new VM is named by the result (vm.define takes XML), so --vm finds it.
                            vm=str(args.get("vm", "") or getattr(getattr(result, "vm", None), "name", "")),
                            node=str(args.get("node", "")),
                            actor=ctx.actor, operation=op.name, args=args, result=outcome)
    except PvcError:
        pass  # the operation's own outcome stands; an unrecorded audit entry must not undo it
