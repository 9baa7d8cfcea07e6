"""`pvc node ...`: hypervisor nodes."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Output, print_json, print_table, run_ops, state_style
from pvc.cli.completion import complete_node

app = typer.Typer(help="Manage hypervisor nodes.", no_args_is_help=True)

NODE_COLUMNS = ["NAME", "MODE", "DAEMON", "COORDINATOR", "DOMAIN STATE", "VMS", "MEM TOTAL", "MEM FREE", "MEM ALLOC", "VCPUS", "LOAD"]


def _row(n) -> list:
    return [n.name, n.daemon_mode, n.daemon_state, n.coordinator_state, n.domain_state, n.domains_count,
            f"{n.memory_total_mib} MiB", f"{n.memory_free_mib} MiB", f"{n.memory_allocated_mib} MiB",
            n.vcpus_allocated, n.load]


@app.command("list")
def list_(output: Output = OUTPUT_OPTION):
    """List nodes with their states and resources."""
    from pvc.ops.common import NoParams

    nodes = run_ops(lambda b: b.call("node.list", NoParams()))
    if output == Output.json:
        print_json(nodes)
    else:
        print_table(NODE_COLUMNS, [_row(n) for n in nodes], {2: state_style, 3: state_style, 4: state_style})


@app.command()
def info(node: str = typer.Argument(..., help="Node name", autocompletion=complete_node), output: Output = OUTPUT_OPTION):
    """Show one node, with where fencing it stands (a dead node not yet fenced says why)."""
    from pvc.ops.node import NodeRef

    view = run_ops(lambda b: b.call("node.info", NodeRef(node=node)))
    # fence: null when the node was never declared dead; else the record (docs/schema.md, "Fencing").
    if output == Output.json:
        print_json(view)
        return
    import msgspec

    for key, value in msgspec.structs.asdict(view).items():
        if key == "fence":
            continue
        if isinstance(value, list):
            value = ",".join(value) or "-"
        typer.echo(f"{key + ':':<22}{value}")
    if view.fence:
        for line in fence_lines(view.fence):
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
    node: str = typer.Argument(..., help="Node name", autocompletion=complete_node),
    confirm_powered_off: bool = typer.Option(
        False, "--confirm-powered-off",
        help="You have made sure the node is powered off (pvc cannot check it: it has no working IPMI)."),
):
    """Declare a powered-off node fenced, so that the primary recovers its VMs on other nodes (for nodes whose IPMI is missing or broken). pvc powers nothing off: make sure the node is off first, as a VM started elsewhere while it still runs there runs twice. Refused while the node's daemon is alive."""
    from pvc.ops.node import FenceParams

    typer.echo(run_ops(lambda b: b.call("node.fence", FenceParams(node=node, confirm_powered_off=confirm_powered_off))).message)


def _local_node(node: str) -> str:
    from pvc.cli.common import local_node_name

    return node or local_node_name()


def _operation(op: str, node: str, wait: bool) -> None:
    from pvc.cli.flushing import request_operation

    code = run_ops(lambda b: request_operation(b, _local_node(node), op, wait))
    raise typer.Exit(code)


NODE_ARG = typer.Argument("", help="Node name (default: this node)", show_default=False,
                          autocompletion=complete_node)
NODE_WAIT = typer.Option(False, "--wait", "-w", help="Say if the flush lock is held, wait for it, then print each VM's outcome as it happens.")


@app.command()
def flush(node: str = NODE_ARG, wait: bool = NODE_WAIT,
          dry_run: bool = typer.Option(False, "--dry-run", help="Only show where each VM would go and why, and which cannot move (changes nothing)."),
          output: Output = OUTPUT_OPTION):
    """Evacuate a node: migrate every VM away (previous_node = this node), under the cluster-wide flush lock; flushes requested meanwhile queue and run one after another."""
    if dry_run:
        from pvc.cli.flushing import print_plan
        from pvc.ops.flush import NodeRef

        plan = run_ops(lambda b: b.call("flush.plan", NodeRef(node=_local_node(node))))
        print_json(plan) if output == Output.json else print_plan(plan)
        return
    _operation("flush", node, wait)


@app.command()
def ready(node: str = NODE_ARG, wait: bool = NODE_WAIT):
    """Return a node to service: bring back every VM whose previous_node is this node (cancels a running flush of this node first)."""
    _operation("ready", node, wait)


app.command("unflush", help="Alias of `ready`.")(ready)
