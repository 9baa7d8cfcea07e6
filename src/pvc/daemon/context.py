"""What every role of a running pvcd shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pvc.config import DaemonConfig
from pvc.libvirt_host import LibvirtHost
from pvc.zk import ZK


@dataclass
class DaemonContext:
    config: DaemonConfig
    zk: ZK
    host: LibvirtHost
    log: Any
    # Filled by roles for each other (e.g. the hypervisor role's domain cache for flush planning).
    services: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return self.config.node_name
