"""``--wait``: follow a VM record by watch until the request is carried out (no polling)."""

from __future__ import annotations

import asyncio

from pvc import vm_states
from pvc.errors import PvcError
from pvc.schema import Domain, Paths

ABSENCE_GRACE = 3.0


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


