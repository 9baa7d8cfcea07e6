"""`pvc cluster ...`: the cluster as a whole, and its cluster-wide settings."""

from __future__ import annotations

from typing import Optional

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, fail, run_ops, show_record

app = typer.Typer(help="Cluster-wide status and settings.", no_args_is_help=True)


MAINTENANCE_BANNER = ("MAINTENANCE MODE: no node is fenced and no VM is recovered automatically "
                      "(flush and ready still work); end it with `pvc cluster config --no-maintenance`")


@app.command()
def status(output: Output = OUTPUT_OPTION):
    """Nodes and VMs by state, the primary coordinator, maintenance, fencing in progress or failed, and the cluster settings."""
    import msgspec

    from pvc.ops.common import NoParams

    if output == Output.name:
        fail("-o name: the cluster status has no names to list (try `pvc node list -o name`)", 2)
    result = msgspec.to_builtins(run_ops(lambda b: b.call("cluster.status", NoParams())))
    if output in (Output.json, Output.yaml):
        return show_record(output, result, list)
    counts = lambda c: ", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "-"  # noqa: E731
    if result["maintenance"]:
        typer.secho(MAINTENANCE_BANNER, bold=True, fg="yellow")
    for twice in result["vms_running_twice"]:
        typer.secho(f"TWO COPIES: VM {twice['vm']} runs on {', '.join(twice['also_on'])} as well as on its node "
                    f"{twice['node']}; stop the wrong copy", bold=True, fg="red")
    typer.echo(f"primary node:  {result['primary_node'] or '-'}")
    typer.echo(f"nodes:         {result['nodes']} ({counts(result['nodes_by_daemon_state'])}; "
               f"{counts(result['nodes_by_domain_state'])})")
    for f in result["fencing"]:
        typer.echo(f"fencing:       {f['node']} {f['status']}: {f['message'] or '-'}")
    typer.echo(f"vms:           {result['vms']} ({counts(result['vms_by_state'])})")
    if result["vms_failed"]:
        typer.echo(f"failed vms:    {', '.join(result['vms_failed'])}")
    for key, value in result["settings"].items():
        typer.echo(f"{key + ':':<15}{str(value).lower() if isinstance(value, bool) else value}")


@app.command()
def config(
    migration_selector: Optional[str] = typer.Option(
        None, "--migration-selector", help="Cluster default selector for placement, migration and flush: "
        "mem | memfree | load | vcpus | vms."),
    maintenance: Optional[bool] = typer.Option(
        None, "--maintenance/--no-maintenance",
        help="Maintenance mode: while on, the primary fences no dead node and recovers no VM (a dead node is "
             "only reported); flush and ready still work."),
    output: Output = OUTPUT_OPTION,
):
    """Show the cluster-wide settings, or change them."""
    from pvc.ops.cluster import SetParams
    from pvc.ops.common import NoParams

    changes = [SetParams(key="migration_selector", value=migration_selector)] if migration_selector is not None else []
    if maintenance is not None:
        changes.append(SetParams(key="maintenance", value="true" if maintenance else "false"))

    async def work(backend):
        result = await backend.call("cluster.settings", NoParams()) if not changes else None
        for change in changes:
            result = await backend.call("cluster.set", change)
        return result

    result = run_ops(work)
    if output == Output.name:
        fail("-o name: the cluster settings have no names to list", 2)
    show_record(output, result, lambda: [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in result.items()])
