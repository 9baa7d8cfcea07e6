"""`pvc node flush|ready` for people: the operations (pvc.ops.flush) do the work, this prints.

Without --wait the command returns once the node's daemon has queued the request (saying who holds
the flush lock when it is busy); with --wait it follows the ``flush.progress`` stream and prints each
VM's outcome as it happens.
"""

from __future__ import annotations

import typer

from pvc.cli.common import plural
from pvc.errors import PvcError

# How a VM moved, as the flush progress records it (MovedVM.method).
METHOD_WORDS = {"live": "live", "shutdown": "shut down and restarted there", "off": "was not running"}


async def request_operation(backend, node: str, op: str, wait: bool) -> int:
    from pvc.ops.flush import FlushParams, ProgressParams

    result = await backend.call("flush.start" if op == "flush" else "flush.ready", FlushParams(node=node))
    verb = "Flushing" if op == "flush" else "Readying"
    if result.queue:
        typer.echo(("Waiting: " if wait else "Queued: ") + result.queue, err=True)
    if not wait:
        if result.status != "queued":
            typer.echo(f"{verb} node {node}")
        return 0
    said, moved, failed = result.queue, [], []
    async for ev in backend.stream("flush.progress", ProgressParams(node=node, id=result.id)):
        if ev.kind == "queued" and ev.message != said:
            typer.echo(f"Waiting: {ev.message}", err=True)
            said = ev.message
        elif ev.kind == "started":
            typer.echo(f"{verb} node {node}: {plural(ev.total, 'VM')}", err=True)
        elif ev.kind == "moved":
            how = METHOD_WORDS.get(ev.method, "")
            typer.echo(f"  {ev.name} -> {ev.target}" + (f" ({how})" if how else ""))
            moved.append(ev)
        elif ev.kind == "failed":
            typer.echo(f"  {ev.name}: not moved: {ev.reason}", err=True)
            failed.append(ev.name)
        elif ev.kind == "cancelled":
            raise PvcError(f"the {op} of node {node} was {ev.message or 'cancelled'}")
        elif ev.kind == "done":
            if failed:
                raise PvcError(f"node {node} {op} finished, but {plural(len(failed), 'VM')} did not move: {', '.join(failed)}")
            typer.echo(f"Node {node} is {'flushed' if op == 'flush' else 'ready'}{moved_summary(moved)}")
            return 0
    raise PvcError(f"lost track of the {op} of node {node}; see `pvc node info {node}`")


def moved_summary(moved) -> str:
    """': 3 VMs moved: 2 live, 1 shut down and restarted there' (nothing when none moved)."""
    if not moved:
        return ""
    from collections import Counter

    counts = Counter(METHOD_WORDS.get(m.method, "moved") for m in moved)
    parts = ", ".join(f"{n} {how}" for how, n in counts.items())
    return f": {plural(len(moved), 'VM')} moved: {parts}"


def _why(m, wide: bool) -> str:
    """Why a VM goes where it goes (short enough for 80 columns; -o wide spells it out), or why not."""
    if m.target and m.running:
        return (f"selector {m.selector}: {m.available_mib} MiB available there, {m.memory_mib} MiB needed" if wide
                else f"{m.selector}: needs {m.memory_mib} of {m.available_mib} MiB")
    if m.target:
        return f"selector {m.selector}: not running, handed over once confirmed off" if wide else \
            f"{m.selector}: off, moves once confirmed"
    return m.reason + (f"; {m.outcome}" if m.outcome else "")


def _plan_columns():
    from pvc.cli.common import Column

    return [Column("VM", lambda m: m.vm), Column("RUNNING", lambda m: "yes" if m.running else "no"),
            Column("TARGET", lambda m: m.target or "-", lambda v: "red" if v == "-" else ""),
            Column("WHY", lambda m: _why(m, False), shown="table"), Column("WHY", lambda m: _why(m, True), shown="wide")]


def print_plan(plan, output) -> None:
    """The flush preview as a table: where each VM would go and why, or why it cannot move."""
    from pvc.cli.common import show_list

    cannot = sum(1 for m in plan.moves if not m.target)
    how = (f"{plural(plan.concurrency, 'migration')} at once" if plan.concurrency else "concurrency not published")
    policy = f", unmovable VMs: {plan.unmovable_policy}" if plan.unmovable_policy else ""
    typer.echo(f"Flush of node {plan.node} ({how}{policy}): {plural(len(plan.moves), 'VM')}"
               + (f", {cannot} cannot move" if cannot else "") + "; nothing was changed")
    if plan.moves:
        show_list(output, plan.moves, _plan_columns(), name=lambda m: m.vm)
