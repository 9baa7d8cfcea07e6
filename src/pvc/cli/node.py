"""`pvc node ...`: hypervisor nodes."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, print_json, print_table, run, state_style

app = typer.Typer(help="Manage hypervisor nodes.", no_args_is_help=True)

NODE_COLUMNS = ["NAME", "MODE", "DAEMON", "COORDINATOR", "DOMAIN STATE", "VMS", "MEM TOTAL", "MEM FREE", "MEM ALLOC", "VCPUS", "LOAD"]


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


def _local_node(node: str) -> str:
    import socket

    return node or socket.gethostname().split(".")[0]


def _operation(op: str, node: str, wait: bool) -> None:
    from pvc.cli.flushing import request_operation

    code = run(lambda zk: request_operation(zk, _local_node(node), op, wait))
    raise typer.Exit(code)


NODE_ARG = typer.Argument("", help="Node name (default: this host)", show_default=False)
NODE_WAIT = typer.Option(False, "--wait", "-w", help="Say if the flush lock is held, wait for it, then follow the operation.")


@app.command()
def flush(node: str = NODE_ARG, wait: bool = NODE_WAIT):
    """Evacuate a node: migrate every VM away (previous_node = this node), under the cluster-wide flush lock; flushes requested meanwhile queue and run one after another."""
    _operation("flush", node, wait)


@app.command()
def ready(node: str = NODE_ARG, wait: bool = NODE_WAIT):
    """Return a node to service: bring back every VM whose previous_node is this node (cancels a running flush of this node first)."""
    _operation("ready", node, wait)


app.command("unflush", help="Alias of `ready`.")(ready)
