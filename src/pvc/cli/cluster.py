"""`pvc cluster ...`: the cluster as a whole, and its cluster-wide settings."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, print_json, run

app = typer.Typer(help="Cluster-wide status and settings.", no_args_is_help=True)


@app.command()
def status(output: Output = OUTPUT_OPTION):
    """Nodes and VMs by state, the primary coordinator, and the cluster settings."""
    from pvc import store

    async def work(zk):
        nodes = await store.list_nodes(zk)
        doms = await store.list_domains(zk)
        return {
            "primary_node": await store.get_setting(zk, "primary_node"),
            "settings": await store.settings(zk),
            "nodes": len(nodes),
            "nodes_by_daemon_state": dict(Counter(n.daemon_state for n in nodes)),
            "nodes_by_domain_state": dict(Counter(n.domain_state for n in nodes)),
            "vms": len(doms),
            "vms_by_state": dict(Counter(d.state for d in doms)),
            "vms_failed": sorted(d.name for d in doms if d.state == "fail"),
        }

    result = run(work)
    if output == Output.json:
        print_json(result)
        return
    counts = lambda c: ", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "-"  # noqa: E731
    typer.echo(f"primary node:  {result['primary_node'] or '-'}")
    typer.echo(f"nodes:         {result['nodes']} ({counts(result['nodes_by_daemon_state'])}; "
               f"{counts(result['nodes_by_domain_state'])})")
    typer.echo(f"vms:           {result['vms']} ({counts(result['vms_by_state'])})")
    if result["vms_failed"]:
        typer.echo(f"failed vms:    {', '.join(result['vms_failed'])}")
    for key, value in result["settings"].items():
        typer.echo(f"{key + ':':<15}{value}")


@app.command()
def config(
    migration_selector: Optional[str] = typer.Option(
        None, "--migration-selector", help="Cluster default selector for placement, migration and flush: "
        "mem | memfree | load | vcpus | vms."),
    maintenance: Optional[bool] = typer.Option(None, "--maintenance/--no-maintenance",
                                               help="Mark the cluster as under maintenance (informational)."),
    output: Output = OUTPUT_OPTION,
):
    """Show the cluster-wide settings, or change them."""
    from pvc import store

    async def work(zk):
        if migration_selector is not None:
            await store.set_setting(zk, "migration_selector", migration_selector)
        if maintenance is not None:
            await store.set_setting(zk, "maintenance", "true" if maintenance else "false")
        return await store.settings(zk)

    result = run(work)
    if output == Output.json:
        print_json(result)
    else:
        for key, value in result.items():
            typer.echo(f"{key + ':':<20}{value}")
