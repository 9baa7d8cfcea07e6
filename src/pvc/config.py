"""pvcd configuration: a YAML file validated into typed records.

msgspec validates the whole tree (types, unknown keys) and names the offending key in one line,
which is what an operator editing /etc/pvc/pvcd.yaml needs.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Literal

import msgspec

from pvc.errors import InvalidInput

DEFAULT_CONFIG_FILE = "/etc/pvc/pvcd.yaml"


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class NodeConfig(_Section):
    # Defaults to the short host name.
    name: str = ""
    # The static list of coordinator nodes (set at install time).
    coordinators: list[str] = []


class ZookeeperConfig(_Section):
    # Comma-separated host:port list of the ensemble.
    hosts: str = "127.0.0.1:2181"
    # Session timeout in seconds: how long a dead daemon keeps its ephemeral nodes.
    session_timeout: float = 5.0
    # Upper bound of any single ZooKeeper request, in seconds.
    request_timeout: float = 5.0
    # The cluster's credential, USER:PASSWORD (ZooKeeper digest scheme): sent on every connection;
    # every node pvcd creates carries the cluster's ACL. "" = none (only for an unprotected cluster).
    auth: str = ""


class LibvirtConfig(_Section):
    # Local libvirt URI the daemon manages.
    uri: str = "qemu:///system"
    # URI peers use to reach this node's libvirt for live migration ("" = not migratable live).
    migration_uri: str = ""
    # Data-plane address for the QEMU migration stream (tcp://HOST), "" lets libvirt choose.
    migration_address: str = ""


class ConsoleLogConfig(_Section):
    directory: str = "/var/log/libvirt"
    # Lines kept per VM.
    lines: int = 1000
    # Seconds between checks of each log file (inotify wakes the tailer sooner).
    interval: float = 0.5


class VmConfig(_Section):
    # Seconds a graceful shutdown may take.
    shutdown_timeout: float = 180.0
    # What happens when it runs out: "stop" forces the VM off, "abort" leaves it running and reports.
    shutdown_timeout_policy: Literal["stop", "abort"] = "stop"
    # Migrations a flush runs at once.
    flush_concurrency: int = 1
    # What a flush does with a VM that has nowhere to go: "shutdown" it, or "leave" it running and report.
    flush_unmovable_policy: Literal["shutdown", "leave"] = "leave"


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class CoordinatorConfig(_Section):
    # Session timeout (seconds) of the primary election's own ZooKeeper session: a primary whose
    # daemon dies is replaced after about this long. ZooKeeper clamps it to [2, 20] x its tickTime.
    election_session_timeout: float = 3.0


class FloatingAddressConfig(_Section):
    # Device the primary puts the address on, and the address with its prefix ("" = none).
    device: str = ""
    address: str = ""


class FrrConfig(_Section):
    # Render FRR's configuration on coordinators (router mode, BGP EVPN for the VXLAN networks).
    enabled: bool = False
    # Where the rendered configuration goes; the reload command runs when it changed ("" = none).
    config_file: str = "/etc/frr/frr.conf"
    reload_command: list[str] = msgspec.field(
        default_factory=lambda: ["/usr/lib/frr/frr-reload.py", "--reload", "/etc/frr/frr.conf"])
    asn: int = 65500
    # BGP router id ("" = this node's cluster address).
    router_id: str = ""
    # Upstream routers the coordinators peer with (eBGP), and their AS number.
    upstream_peers: list[str] = []
    upstream_asn: int = 0


class NetworkingConfig(_Section):
    # Off on nodes without the privileges or devices for it: no interfaces, no primary network duties.
    enabled: bool = True
    # Run every network command (ip, bridge, dnsmasq) inside this network namespace ("" = the daemon's).
    netns: str = ""
    # Underlay device of the VXLAN (managed) networks, and this node's address on it
    # ("" = the device's first IPv4 address).
    cluster_device: str = ""
    cluster_address: str = ""
    # Device whose VLANs carry the bridged networks.
    bridge_device: str = ""
    # How VXLAN broadcast/unknown traffic finds the other nodes: "evpn" (FRR's BGP EVPN fills the
    # forwarding table) or "multicast" (the group below on the cluster device; needs no FRR).
    vxlan_flood: Literal["evpn", "multicast"] = "evpn"
    vxlan_group: str = "239.0.100.1"
    # MTU of the network bridges (0 = the kernel's choice).
    mtu: int = 0
    # Floating addresses that move with the primary role.
    upstream_floating: FloatingAddressConfig = msgspec.field(default_factory=FloatingAddressConfig)
    cluster_floating: FloatingAddressConfig = msgspec.field(default_factory=FloatingAddressConfig)
    # Upstream resolvers the networks' DNS forwards other names to (none: answer only local names).
    dns_servers: list[str] = []
    dhcp_lease_time: int = 3600
    # User dnsmasq drops to once its sockets are open.
    dnsmasq_user: str = "nobody"
    # Where dnsmasq's configuration, hosts files and pid files go.
    run_directory: str = "/run/pvc"
    frr: FrrConfig = msgspec.field(default_factory=FrrConfig)

    def check(self, source: str) -> None:
        from pvc.networks import check_networking_config

        check_networking_config(self, source)


class IpmiConfig(_Section):
    # This node's BMC, published to /nodes/<name>/ipmi so the primary can power the node off.
    hostname: str = ""  # "" = no IPMI: the node is never fenced and its VMs never recovered
    port: int = 623
    username: str = ""
    password: str = ""
    # IPMI v2 cipher suite (ipmitool -C); -1 = ipmitool's own choice (it probes, which costs seconds).
    cipher_suite: int = -1


class FencingConfig(_Section):
    # What the primary does with a dead node: "fence" (power it off through IPMI, then start its
    # VMs elsewhere) or "none" (only mark it dead; its VMs wait for it). The primary's value applies.
    policy: Literal["fence", "none"] = "fence"
    # Seconds a node's presence must be gone before it is considered dead.
    dead_after: float = 10.0
    # Seconds before the second fence attempt on a node whose power-off could not be confirmed;
    # each later wait doubles, up to retry_max_interval (docs/operations.md, "Timers").
    retry_interval: float = 10.0
    retry_max_interval: float = 120.0
    # Upper bound of one ipmitool call, in seconds.
    ipmi_timeout: float = 10.0
    ipmi: IpmiConfig = msgspec.field(default_factory=IpmiConfig)


class CephConfig(_Section):
    # The cluster's ceph.conf ("" = this node uses no Ceph storage: no RBD disks run here).
    conf: str = ""
    # The Ceph client pvcd and QEMU act as, and its keyring ("" = the one ceph.conf names).
    client: str = "client.admin"
    keyring: str = ""
    # UUID of the libvirt secret (usage type ceph) that holds this client's key; the same on
    # every node, so a VM's RBD disk opens wherever it runs.
    secret_uuid: str = ""
    # Seconds between checks that this node reaches Ceph (the keepalive carries the result),
    # and the longest one check may take.
    check_interval: float = 10.0
    check_timeout: float = 5.0


class StorageConfig(_Section):
    ceph: CephConfig = msgspec.field(default_factory=CephConfig)


class ApiConfig(_Section):
    # The REST API on coordinators (docs/api.md): HOST:PORT to listen on ("" = no API).
    listen: str = ""
    # PEM certificate (chain) and key for HTTPS; both or neither (neither: plain HTTP).
    tls_cert: str = ""
    tls_key: str = ""


class MetricsConfig(_Section):
    # Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.md); "" = none.
    listen: str = ""


class DaemonConfig(_Section):
    node: NodeConfig = msgspec.field(default_factory=NodeConfig)
    zookeeper: ZookeeperConfig = msgspec.field(default_factory=ZookeeperConfig)
    libvirt: LibvirtConfig = msgspec.field(default_factory=LibvirtConfig)
    console_log: ConsoleLogConfig = msgspec.field(default_factory=ConsoleLogConfig)
    vm: VmConfig = msgspec.field(default_factory=VmConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    coordinator: CoordinatorConfig = msgspec.field(default_factory=CoordinatorConfig)
    networking: NetworkingConfig = msgspec.field(default_factory=NetworkingConfig)
    fencing: FencingConfig = msgspec.field(default_factory=FencingConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    # Seconds between keepalives (resource stats) written to ZooKeeper.
    keepalive_interval: float = 5.0

    @property
    def node_name(self) -> str:
        return self.node.name or socket.gethostname().split(".")[0]

    @property
    def is_coordinator(self) -> bool:
        return self.node_name in self.node.coordinators


def _check_ranges(cfg: DaemonConfig, source: str) -> None:
    positive = {
        "zookeeper.session_timeout": cfg.zookeeper.session_timeout,
        "zookeeper.request_timeout": cfg.zookeeper.request_timeout,
        "console_log.lines": cfg.console_log.lines,
        "console_log.interval": cfg.console_log.interval,
        "vm.shutdown_timeout": cfg.vm.shutdown_timeout,
        "vm.flush_concurrency": cfg.vm.flush_concurrency,
        "keepalive_interval": cfg.keepalive_interval,
        "coordinator.election_session_timeout": cfg.coordinator.election_session_timeout,
        "networking.dhcp_lease_time": cfg.networking.dhcp_lease_time,
        "fencing.dead_after": cfg.fencing.dead_after,
        "fencing.retry_interval": cfg.fencing.retry_interval,
        "fencing.retry_max_interval": cfg.fencing.retry_max_interval,
        "fencing.ipmi_timeout": cfg.fencing.ipmi_timeout,
        "storage.ceph.check_interval": cfg.storage.ceph.check_interval,
        "storage.ceph.check_timeout": cfg.storage.ceph.check_timeout,
    }
    for key, value in positive.items():
        if not math.isfinite(value) or value <= 0:
            raise InvalidInput(f"config {source}: {key} must be a finite number greater than 0, got {value}")


def parse_config(text: str | bytes, source: str = "<config>") -> DaemonConfig:
    """Parse and validate YAML text; raise InvalidInput naming the bad key."""
    import yaml

    try:
        raw = yaml.safe_load(text) or {}  # an empty or all-comment file means all defaults
    except yaml.YAMLError as exc:
        raise InvalidInput(f"config {source}: not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        cfg = msgspec.convert(raw, type=DaemonConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"config {source}: {exc}") from None
    _check_ranges(cfg, source)
    from pvc.zk import check_credential, parse_connection

    try:
        parse_connection(cfg.zookeeper.hosts)
    except InvalidInput as exc:
        raise InvalidInput(f"config {source}: zookeeper.hosts: {exc}") from None
    if cfg.zookeeper.auth:
        try:
            check_credential(cfg.zookeeper.auth)
        except InvalidInput as exc:
            raise InvalidInput(f"config {source}: zookeeper.auth: {exc}") from None
    cfg.networking.check(source)
    _check_ceph(cfg.storage.ceph, source)
    _check_api(cfg.api, source)
    _check_listen("metrics.listen", cfg.metrics.listen, source)
    return cfg


def _check_ceph(ceph: CephConfig, source: str) -> None:
    if not ceph.conf:
        return
    import uuid

    if not ceph.client.startswith("client.") or len(ceph.client) <= len("client."):
        raise InvalidInput(f"config {source}: storage.ceph.client must be client.NAME, got {ceph.client!r}")
    if ceph.secret_uuid:
        try:
            uuid.UUID(ceph.secret_uuid)
        except ValueError:
            raise InvalidInput(f"config {source}: storage.ceph.secret_uuid is not a UUID: {ceph.secret_uuid!r}") from None


def _check_api(api: ApiConfig, source: str) -> None:
    _check_listen("api.listen", api.listen, source)
    if bool(api.tls_cert) != bool(api.tls_key):
        raise InvalidInput(f"config {source}: api.tls_cert and api.tls_key go together (both or neither)")


def _check_listen(key: str, listen: str, source: str) -> None:
    if listen:
        from pvc.api.address import parse_listen

        try:
            parse_listen(listen)
        except InvalidInput as exc:
            raise InvalidInput(f"config {source}: {key}: {exc}") from None


def load_config(path: str | None = None) -> DaemonConfig:
    path = path or os.environ.get("PVCD_CONFIG_FILE") or DEFAULT_CONFIG_FILE
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError as exc:
        raise InvalidInput(f"config {path}: {exc.strerror}") from None
    return parse_config(text, path)
