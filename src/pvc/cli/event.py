"""`pvc event list`: the cluster's event log (two copies of a VM, stops outside pvc, forced power-offs,
migration fallbacks, fencing)."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, print_json, run

app = typer.Typer(help="The cluster's event log.", no_args_is_help=True)


def _line(e) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(e.time).strftime("%Y-%m-%d %H:%M:%S")
    where = " ".join(x for x in (f"node={e.node}" if e.node else "", f"vm={e.vm}" if e.vm else "") if x)
    return f"{when} {e.severity.upper():<7} {e.kind} {where}: {e.message}"


@app.command("list")
def list_(
    lines: int = typer.Option(20, "--lines", "-n", min=0, help="How many of the newest events to show."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events (Ctrl-C to stop)."),
    output: Output = OUTPUT_OPTION,
):
    """Show the newest events, oldest first (-o json: a list; with -f, one JSON object per line)."""
    from pvc import events

    if follow:
        import msgspec

        async def tail(zk):
            async for e in events.follow(zk, lines):
                typer.echo(msgspec.json.encode(e).decode() if output == Output.json else _line(e))

        run(tail)
        return

    async def work(zk):
        return [e for _, e in await events.recent(zk, lines)]

    found = run(work)
    if output == Output.json:
        print_json(found)
    else:
        for e in found:
            typer.echo(_line(e))
