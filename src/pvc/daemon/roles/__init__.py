"""Node roles: each is a class whose ``run()`` coroutine owns the tasks of that role.

Adding a role means adding one module and one line below. ``applies`` says which nodes run it.
"""

from __future__ import annotations

from collections.abc import Callable

from pvc.api.role import ApiRole
from pvc.daemon.context import DaemonContext
from pvc.daemon.roles.coordinator import CoordinatorRole
from pvc.daemon.roles.hypervisor import HypervisorRole
from pvc.daemon.roles.networking import NetworkingRole
from pvc.daemon.roles.storage import StorageRole

# name -> (role class, does this node run it?)
ROLES: dict[str, tuple[type, Callable[[DaemonContext], bool]]] = {
    "hypervisor": (HypervisorRole, lambda ctx: True),
    "networking": (NetworkingRole, lambda ctx: ctx.config.networking.enabled),
    "coordinator": (CoordinatorRole, lambda ctx: ctx.config.is_coordinator),
    "storage": (StorageRole, lambda ctx: bool(ctx.config.storage.ceph.conf)),
    "api": (ApiRole, ApiRole.applies),
}


def roles_for(ctx: DaemonContext) -> list:
    return [cls(ctx) for cls, applies in ROLES.values() if applies(ctx)]
