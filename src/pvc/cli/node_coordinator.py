"""`pvc node primary NODE` / `pvc node secondary NODE`: hand the primary coordinator role over.

Both write a handover request (``/election/handover``) that the coordinators carry out (see
``pvc.election``); ``--wait`` follows the nodes' coordinator states by watch until it is done
(operations ``node.primary``/``node.secondary`` in pvc.ops.node).
"""

from __future__ import annotations

import typer

from pvc.cli.common import run_ops
from pvc.cli.completion import complete_node
from pvc.cli.node import app

WAIT = typer.Option(False, "--wait", "-w", help="Return once the hand-over is complete (non-zero exit if it fails).")
WAIT_TIMEOUT = typer.Option(60.0, "--wait-timeout", help="Seconds --wait waits at most.")


def _change(op: str, node: str, wait: bool, wait_timeout: float):
    from pvc.ops.node import RoleParams

    return run_ops(lambda b: b.call(op, RoleParams(node=node, wait=wait, timeout=wait_timeout)))


@app.command()
def primary(node: str = typer.Argument(..., help="Coordinator to take the primary role", autocompletion=complete_node), wait: bool = WAIT,
            wait_timeout: float = WAIT_TIMEOUT):
    """Hand the primary coordinator role to NODE gracefully."""
    r = _change("node.primary", node, wait, wait_timeout)
    if r.already:
        typer.echo(f"Node {node} is already primary")
    elif wait:
        typer.echo(f"Node {node} is primary (was {r.primary_before or 'none'})")
    else:
        typer.echo(f"Asked node {node} to take the primary role from {r.primary_before or 'nobody'}")


@app.command()
def secondary(node: str = typer.Argument(..., help="Coordinator to give the primary role up", autocompletion=complete_node), wait: bool = WAIT,
              wait_timeout: float = WAIT_TIMEOUT):
    """Make NODE give the primary coordinator role up (to the next coordinator in line)."""
    r = _change("node.secondary", node, wait, wait_timeout)
    if r.already:
        typer.echo(f"Node {node} is already secondary (primary: {r.primary_before or 'none'})")
    elif wait:
        typer.echo(f"Node {node} is secondary; {r.primary_now} is primary")
    else:
        typer.echo(f"Asked node {node} to hand the primary role to {r.target}")
