"""`pvc node primary NODE` / `pvc node secondary NODE`: hand the primary coordinator role over.

Both write a handover request (``/election/handover``) that the coordinators carry out (see
``pvc.election``); ``--wait`` follows the nodes' coordinator states by watch until it is done.
"""

from __future__ import annotations

import asyncio

import typer

from pvc.cli.common import run
from pvc.cli.node import app

WAIT = typer.Option(False, "--wait", "-w", help="Return once the hand-over is complete (non-zero exit if it fails).")
WAIT_TIMEOUT = typer.Option(60.0, "--wait-timeout", help="Seconds --wait waits at most.")


async def _candidates(zk) -> list[str]:
    from pvc.schema import Paths
    from pvc.zk import NoNode

    try:
        return await zk.children(Paths.primary_election)
    except NoNode:
        return []


async def _check_coordinator(zk, node: str) -> None:
    from pvc import election, store
    from pvc.errors import Conflict, InvalidInput

    view = await store.get_node(zk, node)
    if view.daemon_mode != "coordinator":
        raise InvalidInput(f"node {node} is not a coordinator (coordinators are set in each node's config)")
    if view.daemon_state != "run":
        raise Conflict(f"node {node} is {view.daemon_state}; only a running coordinator can take the primary role")
    if node not in {c.node for c in election.order(await _candidates(zk))}:
        raise Conflict(f"node {node} is not standing in the primary election (is its coordinator role running?)")


async def _request(zk, target: str) -> None:
    from pvc.schema import Paths

    await zk.put(Paths.primary_handover, target.encode())


async def wait_for_primary(zk, target: str, timeout: float, away_from: str = "") -> str:
    """Wait until ``target`` (or, with ``away_from``, anyone else) is primary; return who is."""
    from pvc.errors import PvcError
    from pvc.schema import Paths

    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    state: dict[str, str] = {"primary_node": "", "handover": target, "coordinator_state": ""}
    watches: list[asyncio.Task] = []

    def check() -> None:
        node = state["primary_node"]
        if done.done() or not node:
            return
        if away_from:
            if node != away_from and state.get(f"state:{node}") == "primary":
                done.set_result(node)
        elif node == target and state.get(f"state:{node}") == "primary":
            done.set_result(node)
        elif node != target and state["handover"] != target and state.get(f"state:{node}") == "primary":
            done.set_exception(PvcError(f"the hand-over to {target} did not happen: {node} is primary"))

    def on_primary(data: bytes | None, _v: int) -> None:
        node = (data or b"").decode()
        state["primary_node"] = node
        if node and f"watch:{node}" not in state:
            state[f"watch:{node}"] = "1"
            watches.append(zk.watch_data(Paths.node_key(node, "coordinator_state"), on_state(node)))
        check()

    def on_state(node: str):
        def cb(data: bytes | None, _v: int) -> None:
            state[f"state:{node}"] = (data or b"").decode()
            check()
        return cb

    def on_handover(data: bytes | None, _v: int) -> None:
        state["handover"] = (data or b"").decode()
        check()

    def on_alive(data: bytes | None, _v: int) -> None:
        if data is None and not done.done() and not away_from:
            done.set_exception(PvcError(f"the daemon on node {target} stopped during the hand-over"))

    watches += [zk.watch_data(Paths.primary_node, on_primary), zk.watch_data(Paths.primary_handover, on_handover)]
    if not away_from:
        watches.append(zk.watch_data(Paths.node_key(target, "alive"), on_alive))
    try:
        return await asyncio.wait_for(done, timeout)
    except asyncio.TimeoutError:
        raise PvcError(f"the hand-over did not complete within {timeout:g} s "
                       f"(primary: {state['primary_node'] or 'none'})") from None
    finally:
        for w in watches:
            w.cancel()


@app.command()
def primary(node: str = typer.Argument(..., help="Coordinator to take the primary role"), wait: bool = WAIT,
            wait_timeout: float = WAIT_TIMEOUT):
    """Hand the primary coordinator role to NODE gracefully."""
    from pvc.schema import Paths

    async def work(zk) -> str:
        await _check_coordinator(zk, node)
        current = ((await zk.get_data(Paths.primary_node)) or b"").decode()
        if current == node:
            return f"Node {node} is already primary"
        await _request(zk, node)
        if wait:
            await wait_for_primary(zk, node, wait_timeout)
            return f"Node {node} is primary (was {current or 'none'})"
        return f"Asked node {node} to take the primary role from {current or 'nobody'}"

    typer.echo(run(work))


@app.command()
def secondary(node: str = typer.Argument(..., help="Coordinator to give the primary role up"), wait: bool = WAIT,
              wait_timeout: float = WAIT_TIMEOUT):
    """Make NODE give the primary coordinator role up (to the next coordinator in line)."""
    from pvc import election, store
    from pvc.errors import Conflict, InvalidInput
    from pvc.schema import Paths

    async def work(zk) -> str:
        view = await store.get_node(zk, node)
        if view.daemon_mode != "coordinator":
            raise InvalidInput(f"node {node} is not a coordinator")
        current = ((await zk.get_data(Paths.primary_node)) or b"").decode()
        if current != node:
            return f"Node {node} is already secondary (primary: {current or 'none'})"
        target = election.handover_target(await _candidates(zk), node)
        if not target:
            raise Conflict(f"no other coordinator is running to take the primary role from {node}")
        await _request(zk, target)
        if wait:
            now = await wait_for_primary(zk, target, wait_timeout, away_from=node)
            return f"Node {node} is secondary; {now} is primary"
        return f"Asked node {node} to hand the primary role to {target}"

    typer.echo(run(work))
