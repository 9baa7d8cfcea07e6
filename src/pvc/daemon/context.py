"""What every role of a running pvcd shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pvc.config import DaemonConfig
from pvc.libvirt_host import LibvirtHost
from pvc.zk import ZK

if TYPE_CHECKING:
    from pvc.daemon.netcmd import NetCommands
    from pvc.daemon.node import NodePresence
    from pvc.daemon.roles.coordinator import CoordinatorRole
    from pvc.daemon.roles.hypervisor import HypervisorRole
    from pvc.daemon.roles.networking import NetworkingRole
    from pvc.daemon.roles.storage import StorageRole


@dataclass
class Services:
    """What roles provide each other, filled in as they start (None until then)."""

    presence: NodePresence | None = None
    hypervisor: HypervisorRole | None = None  # its record cache feeds keepalives and flush plans
    coordinator: CoordinatorRole | None = None
    networking: NetworkingRole | None = None
    storage: StorageRole | None = None  # reachability of Ceph, for the keepalive
    netcmd: NetCommands | None = None  # one per daemon: shared by networking and the primary's duties

    def shared_netcmd(self, netns: str, log: Any) -> NetCommands:
        if self.netcmd is None:
            from pvc.daemon.netcmd import NetCommands

            self.netcmd = NetCommands(netns, log)
        return self.netcmd


@dataclass
class DaemonContext:
    config: DaemonConfig
    zk: ZK
    host: LibvirtHost
    log: Any
    services: Services = field(default_factory=Services)

    @property
    def node(self) -> str:
        return self.config.node_name
