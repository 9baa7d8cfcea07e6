"""The primary coordinator's duties: a set of coroutine-owning objects started on takeover and
stopped on relinquish, so that exactly the node holding the election carries them.

A duty is a class with ``async cleanup()`` (at daemon start: undo what an earlier daemon on this
node may have left after dying while primary), ``async start()`` (bring everything up and start
the duty's own tasks) and ``async stop()`` (cancel them and take everything down). Adding a duty
means adding one module and one line below; ``applies`` says which nodes carry it.

What a duty sets up on the host that would outlive a crashed daemon (addresses, child processes)
it also registers with the ``TeardownGuard``: a tiny child process that undoes it when the daemon
dies without relinquishing (kill -9), so a new primary never finds the old one's addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pvc.daemon.context import DaemonContext
from pvc.daemon.duties.client_networks import ClientNetworksDuty
from pvc.daemon.duties.fencing import FencingDuty
from pvc.daemon.duties.floating_addresses import FloatingAddressesDuty
from pvc.daemon.duties.guard import TeardownGuard

# name -> (duty class, does this node carry it when primary?)
DUTIES: dict[str, tuple[type, Callable[[DaemonContext], bool]]] = {
    "floating_addresses": (FloatingAddressesDuty, lambda ctx: ctx.config.networking.enabled),
    "client_networks": (ClientNetworksDuty, lambda ctx: ctx.config.networking.enabled),
    "fencing": (FencingDuty, lambda ctx: True),
}

STOP_TIMEOUT = 20.0


class PrimaryDuties:
    """All duties of this node, started and stopped together (in order, and in reverse)."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self.log = ctx.log.bind(role="primary")
        self.guard = TeardownGuard(ctx)
        self.duties = [cls(ctx, self.guard) for cls, applies in DUTIES.values() if applies(ctx)]
        self.running = False

    async def cleanup(self) -> None:
        await self.guard.cleanup()
        for duty in self.duties:
            try:
                await duty.cleanup()
            except Exception:  # leftovers must not keep the daemon from starting
                self.log.exception("duty_cleanup_failed", duty=duty.name)

    async def start(self) -> None:
        """Start every duty (concurrently: they are independent); return when all are up."""
        self.running = True
        # Only duties that change the host need the guard (fencing does not: ``needs_guard = False``).
        if any(getattr(d, "needs_guard", True) for d in self.duties):
            await self.guard.start()

        async def one(duty) -> None:
            try:
                await duty.start()
            except Exception:  # a broken duty degrades the primary; it does not stop the others
                self.log.exception("duty_start_failed", duty=duty.name)

        await asyncio.gather(*(one(d) for d in self.duties))

    async def stop(self) -> None:
        self.running = False

        async def one(duty) -> bool:
            try:
                await asyncio.wait_for(duty.stop(), STOP_TIMEOUT)
                return True
            except Exception:
                self.log.exception("duty_stop_failed", duty=duty.name)
                return False

        clean = all(await asyncio.gather(*(one(d) for d in self.duties)))
        # Whatever a failed stop left behind, the guard's teardown removes.
        await self.guard.release(teardown=not clean)
