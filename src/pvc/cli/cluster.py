"""`pvc cluster ...`: the cluster as a whole, and its cluster-wide settings."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, print_json, run

app = typer.Typer(help="Cluster-wide status and settings.", no_args_is_help=True)


def typed_settings(raw: dict[str, str]) -> dict:
    """The settings as JSON shows them: maintenance is a boolean, not the stored string."""
    return {k: (v == "true") if k == "maintenance" else v for k, v in raw.items()}


MAINTENANCE_BANNER = ("MAINTENANCE MODE: no node is fenced and no VM is recovered automatically "
                      "(flush and ready still work); end it with `pvc cluster config --no-maintenance`")


@app.command()
def status(output: Output = OUTPUT_OPTION):
    """Nodes and VMs by state, the primary coordinator, maintenance, fencing in progress or failed, and the cluster settings."""
    import msgspec

    from pvc import fence_store, fencing, store

    async def work(zk):
        nodes = await store.list_nodes(zk)
        doms = await store.list_domains(zk)
        fences = await fence_store.read_many(zk, [n.name for n in nodes])
        settings = typed_settings(await store.settings(zk))
        return {
            "primary_node": await store.get_setting(zk, "primary_node"),
            "maintenance": settings["maintenance"],
            "settings": settings,
            "nodes": len(nodes),
            "nodes_by_daemon_state": dict(Counter(n.daemon_state for n in nodes)),
            "nodes_by_domain_state": dict(Counter(n.domain_state for n in nodes)),
            # Nodes declared dead whose fence is not finished (dead, failed, fenced awaiting recovery).
            "fencing": [{"node": name, **msgspec.structs.asdict(f)} for name, f in sorted(fences.items())
                        if f.status in fencing.OPEN_STATUSES],
            "vms": len(doms),
            "vms_by_state": dict(Counter(d.state for d in doms)),
            "vms_failed": sorted(d.name for d in doms if d.state == "fail"),
            # VMs libvirt runs on more than one node: must stay empty (docs/operations.md).
            "vms_running_twice": [{"vm": d.name, "node": d.node, "also_on": d.duplicate_on}
                                  for d in sorted(doms, key=lambda d: d.name) if d.duplicate_on],
        }

    result = run(work)
    if output == Output.json:
        print_json(result)
        return
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
    from pvc import store

    async def work(zk):
        if migration_selector is not None:
            await store.set_setting(zk, "migration_selector", migration_selector)
        if maintenance is not None:
            await store.set_setting(zk, "maintenance", "true" if maintenance else "false")
        return typed_settings(await store.settings(zk))

    result = run(work)
    if output == Output.json:
        print_json(result)
    else:
        for key, value in result.items():
            typer.echo(f"{key + ':':<20}{str(value).lower() if isinstance(value, bool) else value}")
