"""The cluster state layout in ZooKeeper: paths and typed records (documented in docs/schema.md).

One compact JSON record per VM (``/domains/<uuid>``) holds everything a listing needs, including the
often-watched state, so listing 10,000 VMs is 10,000 reads; the large fields (XML, console log) live
in child keys of their own. Node facts that change at different rates live in separate keys.
"""

from __future__ import annotations

from typing import Any

import msgspec

SCHEMA_VERSION = 2  # 2: the per-node VM index /node_domains (pvc.domain_index)

VM_STATES = ("start", "restart", "shutdown", "stop", "disable", "migrate", "fail")
NODE_DAEMON_STATES = ("init", "run", "shutdown", "stop", "dead", "fenced")
NODE_DOMAIN_STATES = ("ready", "flush", "flushed", "unflush")
COORDINATOR_STATES = ("client", "primary", "secondary", "takeover", "relinquish")
SELECTORS = ("mem", "memfree", "load", "vcpus", "vms")
# any: live, falling back to a shutdown migration where live fails; live: never falls back.
MIGRATION_METHODS = ("any", "live", "shutdown")
# The states in which a VM is wanted running: named once, for reconcile, flush and fencing.
WANTS_RUNNING = ("start", "restart", "migrate")


class Record(msgspec.Struct, kw_only=True, omit_defaults=False):
    def encode(self) -> bytes:
        return _encoder.encode(self)

    @classmethod
    def decode(cls, data: bytes):
        return msgspec.json.decode(data, type=cls)


class Migration(msgspec.Struct, kw_only=True):
    """How a VM last changed node: ``live``, ``shutdown`` (shut down here, started there) or
    ``off`` (it was not running: handed over). ``note`` says why a fallback happened."""

    source: str
    target: str
    method: str
    seconds: float = 0.0
    time: float = 0.0
    note: str = ""


class Domain(Record):
    """``/domains/<uuid>``: one VM. ``state`` is the intent an operator set (and the daemons move
    along: shutdown -> stop, restart -> start, migrate -> start); ``libvirt_state`` is what the
    node's daemon last saw libvirt report.

    ``node`` changes only where libvirt's truth backs it: the node's own daemon hands a VM over
    once its libvirt says the VM is off (``target_node`` set while ``state`` is not a running one
    is such a pending hand-over), a live migration's outcome, or recovery from a fenced node."""

    uuid: str
    name: str
    state: str = "stop"
    node: str = ""
    previous_node: str = ""
    failed_reason: str = ""
    # While state is "migrate": where to, and whether the move is permanent or a return home.
    target_node: str = ""
    libvirt_state: str = "shutoff"
    memory_mib: int = 0
    vcpus: int = 0
    # Placement meta
    node_limit: list[str] = []
    selector: str = ""
    autostart: bool = False
    migration_method: str = ""
    console_log_file: str = ""
    # The operator's words and labels (`pvc vm meta --description`, `pvc vm tag add`); pvc only shows them.
    description: str = ""
    tags: list[str] = []
    # Set by `pvc vm rename` (the name before; kept across several renames until followed): the VM's
    # node renames its console log file and any libvirt definition of it, then clears it.
    renamed_from: str = ""
    # Why pvc itself stopped it for lack of a node (a flush's policy shutdown, a fenced node's recovery
    # with nowhere to go); an autostart VM with it set is started by the next node to become ready with
    # room (pvc.autostart). Cleared by that start and by any operator request.
    displaced: str = ""
    # What the last operation really did when that is not plain success nor a failure
    # (a shutdown forced off at its timeout, a migration that fell back); cleared by a new request.
    note: str = ""
    last_migration: Migration | None = None
    # Nodes whose libvirt runs this VM although it is assigned to ``node``: must stay empty.
    duplicate_on: list[str] = []
    # The RBD volumes (POOL/VOLUME) its stored XML names as disks; set whenever the XML is written.
    volumes: list[str] = []
    # `pvc vm volume add|remove` requests on a VM that runs (or is asked to) that its node has not
    # yet applied to the running domain (attach/detach); the node sets it back to 0.
    disk_changes: int = 0


class Event(Record):
    """``/events/e-<seq>``: one entry of the cluster's event log (what operators must hear of:
    two copies of a VM, a VM stopped outside pvc, a forced power-off, a migration that fell back)."""

    time: float
    kind: str
    severity: str = "info"  # info | warning | error
    node: str = ""
    vm: str = ""
    message: str = ""
    # An operation's audit entry (kind "operation"): who (``zookeeper`` or ``token:NAME``), which
    # operation, its arguments and its outcome ("ok" or "error: ...").
    actor: str = ""
    operation: str = ""
    args: dict[str, Any] = {}
    result: str = ""


class NodeInfo(Record):
    """``/nodes/<name>``: facts written once at daemon start."""

    name: str
    daemon_mode: str = "hypervisor"
    libvirt_uri: str = ""
    migration_uri: str = ""
    migration_address: str = ""
    console_log_directory: str = ""
    pvc_version: str = ""
    cpu_count: int = 0
    arch: str = ""
    kernel: str = ""
    # The daemon's flush settings (vm.flush_concurrency, vm.flush_unmovable_policy), for the preview.
    flush_concurrency: int = 0
    flush_unmovable_policy: str = ""


class Keepalive(Record):
    """``/nodes/<name>/keepalive``: resource stats, rewritten every keepalive interval."""

    time: float = 0.0
    memory_total_mib: int = 0
    memory_used_mib: int = 0
    memory_free_mib: int = 0
    memory_allocated_mib: int = 0
    vcpus_total: int = 0
    vcpus_allocated: int = 0
    load: float = 0.0
    domains_count: int = 0
    running_domains: list[str] = []
    # Whether this node reaches Ceph: "" (no Ceph configured), "ok", or "unreachable: <why>".
    storage: str = ""


class ApiToken(Record):
    """``/tokens/<sha256 of the token>``: a REST API token (docs/api.md); the token itself is never kept."""

    name: str
    read_only: bool = False
    created: float = 0.0


class FlushRequest(Record):
    """``/nodes/<name>/flush_request``: written by `pvc node flush|ready`, carried out by that node."""

    op: str  # flush | ready
    id: str
    time: float = 0.0


class MovedVM(msgspec.Struct):
    name: str
    target: str
    method: str = ""  # live | shutdown (restarted there) | off (was not running)


class FailedVM(msgspec.Struct):
    name: str
    reason: str


class FlushProgress(Record):
    """``/nodes/<name>/flush_progress``: the node's account of its latest flush or ready."""

    id: str
    op: str
    status: str = "queued"  # queued | running | done | cancelled
    total: int = 0
    moved: list[MovedVM] = []
    failed: list[FailedVM] = []
    # The migrations in flight now (name, target; method ""), at most ``concurrency`` of them.
    moving: list[MovedVM] = []
    concurrency: int = 0  # the limit applied (vm.flush_concurrency of the node)
    peak: int = 0  # the most migrations of this operation in flight at once
    message: str = ""
    started: float = 0.0  # when the lock was taken (epoch seconds)
    finished: float = 0.0


class LockEntry(Record):
    """Data of a contender's child under ``/locks/flush``."""

    node: str
    op: str
    id: str


class Network(Record):
    """``/networks/<vni>``: one client network. ``managed``: a VXLAN with the VNI, whose gateway,
    DHCP and DNS the primary coordinator provides; ``bridged``: the VLAN ``vni`` on each node's
    bridge device, plain layer 2. Empty strings mean "not set"."""

    vni: int
    type: str = "managed"
    description: str = ""
    domain: str = ""
    ipv4_network: str = ""
    ipv4_gateway: str = ""
    dhcp4: bool = False
    dhcp4_start: str = ""
    dhcp4_end: str = ""
    ipv6_network: str = ""
    ipv6_gateway: str = ""


class Lease(Record):
    """``/networks/<vni>/leases/<mac>``: a DHCP lease, written by dnsmasq's lease script hook."""

    mac: str
    ip: str
    hostname: str = ""
    expiry: int = 0  # epoch seconds; 0 = infinite
    client_id: str = ""


class Reservation(Record):
    """``/networks/<vni>/reservations/<mac>``: a static DHCP host."""

    mac: str
    ip: str
    hostname: str = ""


class IpmiInfo(Record):
    """``/nodes/<name>/ipmi``: the node's BMC, from its own config (``fencing.ipmi``), for the primary's
    fencing duty. Credentials included, as the original system kept them in ZooKeeper: restrict
    access to ZooKeeper accordingly."""

    hostname: str = ""
    port: int = 623
    username: str = ""
    password: str = ""
    cipher_suite: int = -1  # ipmitool -C; -1 = ipmitool's default


FENCE_STATUSES = ("dead", "failed", "fenced", "recovered", "returned")


class FenceState(Record):
    """``/nodes/<name>/fence``: where fencing this node stands, written by the primary's fencing duty
    (and by `pvc node fence --confirm-powered-off`). Kept in ZooKeeper so that a new primary carries
    on where the old one stopped (attempt count, retry schedule, a recovery not yet done), and so that
    `pvc node info` and `pvc cluster status` show a fence that failed. Decided by ``pvc.fencing``."""

    status: str = ""  # "" (never dead) | dead | failed | fenced | recovered | returned
    method: str = ""  # how the power-off was confirmed: ipmi | operator
    attempts: int = 0  # failed power-off attempts since the node was declared dead
    message: str = ""  # why it is not fenced (yet), or what the last attempt said
    dead_since: float = 0.0  # epoch seconds
    last_attempt: float = 0.0
    next_attempt: float = 0.0  # 0 = none planned
    fenced_at: float = 0.0
    recovered_at: float = 0.0
    recovered_vms: int = 0  # VM records changed by the recovery
    # Ceph client addresses of this node blocklisted before its VMs were recovered (``ceph osd
    # blocklist add``); removed, and the list emptied, once the node is back and ready.
    blocklisted: list[str] = []
    by: str = ""  # the primary that wrote this (or "operator")


class NodeNetwork(Record):
    """``/nodes/<name>/network``: what a node's networking role reports about itself."""

    cluster_address: str = ""  # the node's VXLAN tunnel endpoint / BGP peering address
    netns: str = ""


_encoder = msgspec.json.Encoder()


class Paths:
    schema_version = "/schema/version"
    config = "/config"
    primary_node = "/config/primary_node"
    maintenance = "/config/maintenance"
    migration_selector = "/config/migration_selector"
    locks = "/locks"
    flush_lock = "/locks/flush"
    nodes = "/nodes"
    domains = "/domains"
    domain_names = "/domain_names"
    # Per node, the VMs that concern it (pvc.domain_index): /node_domains/<node>/<uuid>, empty values.
    node_domains = "/node_domains"
    networks = "/networks"
    events = "/events"
    tokens = "/tokens"  # REST API tokens: /tokens/<sha256 hex of the token>

    @staticmethod
    def node(name: str) -> str:
        return f"/nodes/{name}"

    @staticmethod
    def node_key(name: str, key: str) -> str:
        # key: alive | daemon_state | domain_state | coordinator_state | keepalive
        #      | flush_request | flush_progress | network | ipmi | fence
        return f"/nodes/{name}/{key}"

    @staticmethod
    def node_log(name: str) -> str:
        # The node's pvcd log lines: a bounded ring of chunks ``<first line number>`` (pvc.node_log).
        return f"/nodes/{name}/log"

    @staticmethod
    def domain(uuid: str) -> str:
        return f"/domains/{uuid}"

    @staticmethod
    def domain_xml(uuid: str) -> str:
        return f"/domains/{uuid}/xml"

    @staticmethod
    def domain_console_log(uuid: str) -> str:
        return f"/domains/{uuid}/console_log"

    @staticmethod
    def domain_name(name: str) -> str:
        return f"/domain_names/{name}"

    @staticmethod
    def node_domains_of(node: str) -> str:
        return f"/node_domains/{node}"

    @staticmethod
    def node_domain(node: str, uuid: str) -> str:
        return f"/node_domains/{node}/{uuid}"

    # -- coordinators and client networks (docs/schema.md, "Coordinators", "Client networks") --
    election = "/election"
    # Ephemeral sequential candidates "<node>-<seq>"; the lowest holds the primary role.
    primary_election = "/election/primary"
    # The coordinator a graceful handover goes to ("" when none is asked for).
    primary_handover = "/election/handover"

    @staticmethod
    def network(vni: int | str) -> str:
        return f"/networks/{vni}"

    @staticmethod
    def network_leases(vni: int | str) -> str:
        return f"/networks/{vni}/leases"

    @staticmethod
    def network_lease(vni: int | str, mac: str) -> str:
        return f"/networks/{vni}/leases/{mac}"

    @staticmethod
    def network_reservations(vni: int | str) -> str:
        return f"/networks/{vni}/reservations"

    @staticmethod
    def network_reservation(vni: int | str, mac: str) -> str:
        return f"/networks/{vni}/reservations/{mac}"


# What `pvc init` creates, with initial data.
LAYOUT: dict[str, bytes] = {
    "/schema": b"",
    Paths.schema_version: str(SCHEMA_VERSION).encode(),
    Paths.config: b"",
    Paths.primary_node: b"",
    Paths.maintenance: b"false",
    Paths.migration_selector: b"mem",
    Paths.locks: b"",
    Paths.flush_lock: b"",
    Paths.nodes: b"",
    Paths.domains: b"",
    Paths.domain_names: b"",
    Paths.node_domains: b"",
    Paths.networks: b"",
    Paths.events: b"",
    Paths.tokens: b"",
    Paths.election: b"",
    Paths.primary_election: b"",
    Paths.primary_handover: b"",
}
