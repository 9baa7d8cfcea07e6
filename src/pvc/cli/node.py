"""`pvc node ...`: hypervisor nodes."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, fail, print_json, print_table, run, state_style

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
    """Show one node, with where fencing it stands (a dead node not yet fenced says why)."""
    from pvc import fence_store, store

    async def work(zk):
        return await store.get_node(zk, node), (await fence_store.read(zk, node))[0]

    view, fence = run(work)
    import msgspec

    fields = msgspec.structs.asdict(view)
    # fence: null when the node was never declared dead; else the record (docs/schema.md, "Fencing").
    fields["fence"] = msgspec.structs.asdict(fence) if fence.status else None
    if output == Output.json:
        print_json(fields)
        return
    for key, value in fields.items():
        if key == "fence":
            continue
        if isinstance(value, list):
            value = ",".join(value) or "-"
        typer.echo(f"{key + ':':<22}{value}")
    if fence.status:
        for line in fence_lines(fence):
            typer.echo(line)


def fence_lines(fence) -> list[str]:
    """The fence record for people: status, attempts, the message, times (local clock)."""
    import time

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"

    lines = [f"{'fence_status:':<22}{fence.status}" + (f" (by {fence.method})" if fence.method else ""),
             f"{'fence_message:':<22}{fence.message or '-'}"]
    if fence.attempts:
        lines.append(f"{'fence_attempts:':<22}{fence.attempts} failed, last at {when(fence.last_attempt)}")
    if fence.status == "failed" and fence.next_attempt:
        lines.append(f"{'fence_next_attempt:':<22}{when(fence.next_attempt)}")
    if fence.fenced_at:
        lines.append(f"{'fenced_at:':<22}{when(fence.fenced_at)}")
    return lines


@app.command()
def fence(
    node: str = typer.Argument(..., help="Node name"),
    confirm_powered_off: bool = typer.Option(
        False, "--confirm-powered-off",
        help="You have made sure the node is powered off (pvc cannot check it: it has no working IPMI)."),
):
    """Declare a powered-off node fenced, so that the primary recovers its VMs on other nodes (for nodes whose IPMI is missing or broken). pvc powers nothing off: make sure the node is off first, as a VM started elsewhere while it still runs there runs twice. Refused while the node's daemon is alive."""
    from pvc import fence_store, store

    if not confirm_powered_off:
        fail(f"`pvc node fence {node}` declares the node powered off (daemon_state fenced) and lets the primary "
             f"start its VMs on other nodes; it powers nothing off. Power {node} off, then run "
             f"`pvc node fence {node} --confirm-powered-off`", code=2)

    async def work(zk):
        changed, message = await fence_store.declare_powered_off(zk, node)
        if changed and await store.get_setting(zk, "maintenance") == "true":
            message += " once maintenance is turned off (it is on: nothing is recovered automatically)"
        return message

    typer.echo(run(work))


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
