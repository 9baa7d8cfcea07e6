"""Waiting for intent to be carried out: follow records by watch until done (no polling).

Used by ``vm.wait``/``?wait=true`` (VM state changes and migrations), ``node.primary``/``node.secondary``
(the coordinator hand-over) and the volume operations (a disk attached live).
"""

from __future__ import annotations

import asyncio

from pvc import vm_states
from pvc.errors import PvcError, TimedOut
from pvc.schema import Domain, Paths

ABSENCE_GRACE = 3.0


async def bounded(awaitable, timeout: float, what: str):
    """``awaitable`` within ``timeout`` seconds (0: no limit), else TimedOut naming ``what``."""
    if not timeout:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise TimedOut(f"{what} within {timeout:g} s; the request stays recorded") from None


async def wait_for_vm(zk, uuid: str, action: str, after_version: int, nodes: list[str], outcome=None) -> Domain:
    """Return the record once ``action`` finished (or ``outcome(record)`` says so); raise with the
    reason if it failed, or if a daemon that must act is not running (the request stays recorded)."""
    outcome = outcome or (lambda dom: vm_states.wait_outcome(action, dom))
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def finish(result=None, error: str = "") -> None:
        if not done.done():
            done.set_exception(PvcError(error)) if error else done.set_result(result)

    def on_record(data: bytes | None, version: int) -> None:
        if data is None:
            finish(error="the VM was undefined while waiting")
        elif version >= after_version:
            dom = Domain.decode(data)
            finished, error = outcome(dom)
            if finished:
                finish(dom, error)

    def on_alive(node: str):
        # A daemon renewing its ZooKeeper session (after a server restart) is briefly absent: only a
        # daemon still gone after ABSENCE_GRACE seconds counts as not running.
        timer: list[asyncio.TimerHandle] = []

        def check(data: bytes | None, _version: int) -> None:
            for t in timer:
                t.cancel()
            timer.clear()
            if data is None:
                timer.append(loop.call_later(ABSENCE_GRACE, lambda: finish(
                    error=f"the daemon on node {node} is not running; the request is recorded and "
                          "will be carried out when it returns")))
        return check

    watches = [zk.watch_data(Paths.domain(uuid), on_record)]
    watches += [zk.watch_data(Paths.node_key(n, "alive"), on_alive(n)) for n in dict.fromkeys(nodes) if n]
    try:
        return await done
    finally:
        for w in watches:
            w.cancel()


async def wait_for_primary(zk, target: str, timeout: float, away_from: str = "") -> str:
    """Wait until ``target`` (or, with ``away_from``, anyone else) is primary; return who is."""
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
