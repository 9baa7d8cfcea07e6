"""`pvc connection add|list|remove`: named REST API endpoints for `pvc -c NAME` (or PVC_CONNECTION),
kept in ~/.config/pvc/connections.json (mode 0600). These commands touch only that file."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Column, Output, fail, show_list

app = typer.Typer(help="REST API connections of this CLI (pvc -c NAME ...).", no_args_is_help=True)


def _guard(step):
    from pvc.errors import PvcError

    try:
        return step()
    except PvcError as exc:
        fail(str(exc), exc.exit_code)


@app.command("add")
def add(
    name: str,
    url: str = typer.Option(..., "--url", help="The API's root, http(s)://HOST:PORT."),
    token: str = typer.Option(..., "--token", help="A token from `pvc token add`."),
    ca: str = typer.Option("", "--ca", help="CA certificate (PEM) to trust for https (default: the system's)."),
):
    """Add (or replace) a connection."""
    import os

    from pvc.api import connections

    def step():
        checked = connections.check(url, ca)
        found = connections.load()
        found[name] = connections.Connection(url=checked, token=token, ca=os.path.abspath(ca) if ca else "")
        connections.save(found)
        return connections.path()

    where = _guard(step)
    typer.echo(f"connection {name} saved in {where}; use it with `pvc -c {name} ...` or PVC_CONNECTION={name}")


@app.command("list")
def list_(output: Output = OUTPUT_OPTION):
    """List connections (tokens are not shown)."""
    from pvc.api import connections

    found = _guard(connections.load)
    rows = [{"name": n, "url": c.url, "ca": c.ca} for n, c in found.items()]
    show_list(output, rows, [Column("NAME", lambda r: r["name"]), Column("URL", lambda r: r["url"]),
                             Column("CA", lambda r: r["ca"] or "-", shown="wide")], name=lambda r: r["name"])


@app.command("remove")
def remove(name: str):
    """Forget a connection (its token stays valid on the cluster: `pvc token remove` revokes it)."""
    from pvc.api import connections

    def step():
        found = connections.load()
        connections.get(name)  # unknown: says which exist
        del found[name]
        connections.save(found)

    _guard(step)
    typer.echo(f"removed connection {name}")
