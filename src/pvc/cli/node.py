"""`pvc node ...`: hypervisor nodes."""

from __future__ import annotations

import typer

from pvc.cli.common import OUTPUT_OPTION, Column, Output, print_names, run_ops, show_list, show_record, state_style
from pvc.cli.completion import complete_node

app = typer.Typer(help="Manage hypervisor nodes.", no_args_is_help=True)

# The default set fits 80 columns (16-character names, 5-digit MiB); -o wide adds the rest.
NODE_COLUMNS = [
    Column("NAME", lambda n: n.name),
    Column("MODE", lambda n: n.daemon_mode, shown="wide"),
    Column("DAEMON", lambda n: n.daemon_state, state_style),
    Column("COORDINATOR", lambda n: n.coordinator_state, state_style),
    Column("DOMAIN", lambda n: n.domain_state, state_style),
    Column("VMS", lambda n: n.domains_count),
    Column("MEM TOTAL", lambda n: f"{n.memory_total_mib} MiB", shown="wide"),
    Column("MEM FREE", lambda n: f"{n.memory_free_mib} MiB"),
    Column("MEM ALLOC", lambda n: f"{n.memory_allocated_mib} MiB"),
    Column("VCPUS", lambda n: n.vcpus_allocated, shown="wide"),
    Column("LOAD", lambda n: n.load),
    Column("STORAGE", lambda n: n.storage or "-", shown="wide"),
    Column("VERSION", lambda n: n.pvc_version or "-", shown="wide"),
]


@app.command("list")
def list_(output: Output = OUTPUT_OPTION):
    """List nodes with their states and resources."""
    from pvc.ops.common import NoParams

    nodes = run_ops(lambda b: b.call("node.list", NoParams()))
    show_list(output, nodes, NODE_COLUMNS)


@app.command()
def info(node: str = typer.Argument(..., help="Node name", autocompletion=complete_node), output: Output = OUTPUT_OPTION):
    """Show one node, with where fencing it stands (a dead node not yet fenced says why)."""
    from pvc.ops.node import NodeRef

    view = run_ops(lambda b: b.call("node.info", NodeRef(node=node)))
    # fence: null when the node was never declared dead; else the record (docs/schema.md, "Fencing").
    def fields() -> list:
        import msgspec

        pairs = [(k, v) for k, v in msgspec.structs.asdict(view).items() if k != "fence"]
        return pairs + (fence_fields(view.fence) if view.fence else [])

    show_record(output, view, fields)


def fence_fields(fence) -> list[tuple[str, str]]:
    """The fence record for people: status, attempts, the message, times (local clock)."""
    import time

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"

    pairs = [("fence_status", fence.status + (f" (by {fence.method})" if fence.method else "")),
             ("fence_message", fence.message or "-")]
    if fence.attempts:
        pairs.append(("fence_attempts", f"{fence.attempts} failed, last at {when(fence.last_attempt)}"))
    if fence.status == "failed" and fence.next_attempt:
        pairs.append(("fence_next_attempt", when(fence.next_attempt)))
    if fence.fenced_at:
        pairs.append(("fenced_at", when(fence.fenced_at)))
    return pairs


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
        if output == Output.name:
            print_names(m.vm for m in plan.moves)
        elif output in (Output.json, Output.yaml):
            show_record(output, plan, list)
        else:
            print_plan(plan, output)
        return
    _operation("flush", node, wait)


@app.command()
def ready(node: str = NODE_ARG, wait: bool = NODE_WAIT):
    """Return a node to service: bring back every VM whose previous_node is this node (cancels a running flush of this node first)."""
    _operation("ready", node, wait)


app.command("unflush", help="Alias of `ready`.")(ready)
