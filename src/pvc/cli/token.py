"""`pvc token add|list|remove`: REST API tokens (docs/api.md). Works directly on ZooKeeper or
through a connection with a read-write token."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, YES_OPTION, Column, Output, confirm, run_ops, show_list, show_record

app = typer.Typer(help="REST API tokens.", no_args_is_help=True)


def _when(created: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")


@app.command("add")
def add(
    name: str = typer.Argument(..., help="Who or what will use it (letters, digits, '_', '.', '-')."),
    read_only: bool = typer.Option(False, "--read-only", help="May read everything, change nothing (403)."),
    output: Output = OUTPUT_OPTION,
):
    """Make a token and print it, once: only its hash is kept."""
    from pvc.ops.token import TokenAdd

    made = run_ops(lambda b: b.call("token.add", TokenAdd(name=name, read_only=read_only)))
    if output in (Output.json, Output.yaml):
        return show_record(output, made, list)
    typer.echo(made.token)
    typer.echo(f"token {made.name} ({'read-only' if made.read_only else 'read-write'}): shown once, "
               "keep it safe (requests carry it as Authorization: Bearer TOKEN)", err=True)


@app.command("list")
def list_(output: Output = OUTPUT_OPTION):
    """List the tokens: names and rights (never the tokens)."""
    from pvc.ops.common import NoParams

    found = run_ops(lambda b: b.call("token.list", NoParams()))
    show_list(output, found, [Column("NAME", lambda t: t.name),
                              Column("RIGHTS", lambda t: "read-only" if t.read_only else "read-write"),
                              Column("CREATED", lambda t: _when(t.created))])


@app.command("remove")
def remove(
    name: str,
    yes: bool = YES_OPTION,
):
    """Remove a token: requests carrying it get 401 from then on."""
    from pvc.ops.token import TokenRef

    confirm(f"Remove token {name} (whoever uses it is cut off)", yes)
    gone = run_ops(lambda b: b.call("token.remove", TokenRef(name=name)))
    typer.echo(f"removed token {gone.name}")
