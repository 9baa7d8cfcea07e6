"""`pvc cluster events`: the cluster's event log (every operation with who asked, VMs started, stopped,
crashed and migrated, fencing, primary changes, flushes, two copies of a VM, stops outside pvc).
`pvc event list` is the same command under its older name."""

from __future__ import annotations

from typing import Optional

import typer

from pvc.cli import cluster
from pvc.cli.common import OUTPUT_OPTION, Output, print_json, print_yaml, run_ops

app = typer.Typer(help="The cluster's event log (`pvc event list` = `pvc cluster events`).", no_args_is_help=True)


def _line(e) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S")
    where = " ".join(x for x in (f"node={e.node}" if e.node else "", f"vm={e.vm}" if e.vm else "",
                                 f"by={e.actor}" if e.actor else "") if x)
    return f"{when} {e.severity.upper():<7} {e.kind} {where}: {e.message}"


def show(
    vm: Optional[str] = typer.Option(None, "--vm", help="Only events of this VM (by name)."),
    node: Optional[str] = typer.Option(None, "--node", help="Only events of this node."),
    since: Optional[str] = typer.Option(
        None, "--since", help="Only events since: a duration back from now (30s, 10m, 2h, 1d) or a time "
                              "(2026-11-30T10:00:00, local time unless it has an offset)."),
    lines: int = typer.Option(20, "--lines", "-n", min=0, help="How many of the newest matching events to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events (Ctrl-C to stop)."),
    output: Output = OUTPUT_OPTION,
):
    """Show the newest events, oldest first, one a line (-o json/yaml: a list; with -f, one JSON object per
    line, or one YAML document per event)."""
    import datetime
    import time

    from pvc.ops.event import EventQuery, since_time

    if output == Output.name:
        from pvc.cli.common import fail

        fail("-o name: events have no names; use -o json or yaml", 2)

    if since:  # the user's local time: made absolute here, so the API reads it the same
        from pvc.errors import PvcError

        try:
            moment = since_time(since, time.time(), naive_local=True)
        except PvcError as exc:
            from pvc.cli.common import fail

            fail(f"--{exc}")
        since = datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()
    query = {"vm": vm or "", "node": node or "", "since": since or "", "lines": lines}
    if follow:
        import msgspec

        async def tail(backend):
            async for e in backend.stream("event.follow", EventQuery(**query)):
                if output == Output.yaml:
                    typer.echo("---")
                    print_yaml(e)
                else:
                    typer.echo(msgspec.json.encode(e).decode() if output == Output.json else _line(e))

        run_ops(tail)
        return

    found = run_ops(lambda backend: backend.call("event.list", EventQuery(**query)))
    if output == Output.json:
        print_json(found)
    elif output == Output.yaml:
        print_yaml(found)
    else:
        for e in found:
            typer.echo(_line(e))


cluster.app.command("events")(show)
app.command("list", help="The same as `pvc cluster events`.")(show)
