"""`pvc node ...`: hypervisor nodes."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, print_json, print_table, run, state_style

app = typer.Typer(help="Manage hypervisor nodes.", no_args_is_help=True)

NODE_COLUMNS = ["NAME", "MODE", "DAEMON", "COORDINATOR", "DOMAINS", "VMS", "MEM TOTAL", "MEM FREE", "MEM ALLOC", "VCPUS", "LOAD"]


def _row(n) -> list:
    return [n.name, n.daemon_mode, n.daemon_state, n.coordinator_state, n.domain_state, n.domains_count,
            f"{n.memory_total_mib} MiB", f"{n.memory_free_mib} MiB", f"{n.memory_allocated_mib} MiB",
            n.vcpus_allocated, n.load]


@app.command("list")
def list_(output: Output = OUTPUT_OPTION):
    """List nodes with their states and resources."""
    from pvc import store

    nodes = run(store.list_nodes)
    if output == Output.json:
        print_json(nodes)
    else:
        print_table(NODE_COLUMNS, [_row(n) for n in nodes], {2: state_style, 3: state_style, 4: state_style})


@app.command()
def info(node: str = typer.Argument(..., help="Node name"), output: Output = OUTPUT_OPTION):
    """Show one node."""
    from pvc import store

    view = run(lambda zk: store.get_node(zk, node))
    if output == Output.json:
        print_json(view)
        return
    import msgspec

    for key, value in msgspec.structs.asdict(view).items():
        if isinstance(value, list):
            value = ",".join(value) or "-"
        typer.echo(f"{key + ':':<22}{value}")
