"""Typed reads and writes of the cluster state, shared by the CLI and the daemons."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from pvc import domain_index, placement, vm_states
from pvc.errors import Conflict, InvalidInput, NotFound, PvcError
from pvc.names import check_vm_name
from pvc.schema import LAYOUT, SCHEMA_VERSION, Domain, Keepalive, NodeInfo, Paths
from pvc.zk import ZK, BadVersion, NodeExists, NoNode

if TYPE_CHECKING:  # an annotation only: a CLI read need not load the XML parser (xml.etree)
    from pvc.domain_xml import DomainSpec

NODE_KEYS = ("alive", "daemon_state", "domain_state", "coordinator_state", "keepalive")


# -- schema ----------------------------------------------------------------------------------------


async def init_cluster(zk: ZK) -> bool:
    """Create the layout; True if it was created, False if it existed already."""
    existing = await zk.get_data(Paths.schema_version)
    if existing is not None:
        version = existing.decode()
        while version != str(SCHEMA_VERSION) and version in _UPGRADES:
            version = await _UPGRADES[version](zk)  # each step writes its new version last
        if version != str(SCHEMA_VERSION):
            raise Conflict(f"cluster has schema version {existing.decode()}, this pvc writes {SCHEMA_VERSION}")
        return False
    for path, data in LAYOUT.items():
        if path == Paths.schema_version:
            continue
        try:
            await zk.create(path, data)
        except NodeExists:
            pass
    # The version key goes last: its presence means the layout is complete.
    await zk.create(Paths.schema_version, LAYOUT[Paths.schema_version])
    return True


async def check_schema(zk: ZK) -> None:
    version = await zk.get_data(Paths.schema_version)
    if version is None:
        raise NotFound("the cluster is not initialised: run `pvc init`")
    if version.decode() != str(SCHEMA_VERSION):
        hint = ": run `pvc init` to upgrade it" if version.decode() in _UPGRADES else ""
        raise Conflict(f"cluster has schema version {version.decode()}, this pvc understands {SCHEMA_VERSION}{hint}")


async def _upgrade_1_to_2(zk: ZK) -> str:
    """Version 2 adds the per-node VM index (pvc.domain_index): built from every record."""
    await _create_missing(zk, [Paths.node_domains])
    index = domain_index.entries(await list_domains(zk))
    await _create_missing(zk, domain_index.folders([*await node_names(zk), *index]))
    await _create_missing(zk, [Paths.node_domain(n, u) for n, uuids in index.items() for u in uuids])
    await zk.set(Paths.schema_version, b"2")
    return "2"


# Version read -> the step that upgrades a cluster from it (`pvc init`); no daemon runs old versions'
# writes meanwhile: they refuse a cluster whose version they do not know.
_UPGRADES = {"1": _upgrade_1_to_2}


async def _create_missing(zk: ZK, paths: list[str], batch: int = 500) -> None:
    async def one(path: str) -> None:
        try:
            await zk.create(path, b"")
        except NodeExists:
            pass

    for i in range(0, len(paths), batch):
        await asyncio.gather(*(one(p) for p in paths[i:i + batch]))


# -- nodes -----------------------------------------------------------------------------------------


class NodeView(msgspec.Struct, kw_only=True):
    """A node as `pvc node list/info -o json` shows it (documented in docs/schema.md)."""

    name: str
    daemon_mode: str
    daemon_state: str
    coordinator_state: str
    domain_state: str
    domains_count: int
    running_domains: list[str]
    memory_total_mib: int
    memory_used_mib: int
    memory_free_mib: int
    memory_allocated_mib: int
    vcpus_total: int
    vcpus_allocated: int
    load: float
    keepalive_time: float
    libvirt_uri: str
    migration_uri: str
    console_log_directory: str
    pvc_version: str
    storage: str = ""  # from the keepalive: "" (no Ceph), "ok", "unreachable: <why>"

    def candidate(self) -> placement.Candidate:
        return placement.Candidate(
            name=self.name,
            daemon_state=self.daemon_state,
            domain_state=self.domain_state,
            memory_total_mib=self.memory_total_mib,
            memory_free_mib=self.memory_free_mib,
            memory_allocated_mib=self.memory_allocated_mib,
            vcpus_allocated=self.vcpus_allocated,
            load=self.load,
            domains_count=self.domains_count,
            storage_ok=self.storage == "ok",
            running=frozenset(self.running_domains),
        )


def effective_daemon_state(stored: str, alive: bool) -> str:
    """A daemon that claims to be up but whose session is gone is dead."""
    if not alive and stored in ("init", "run", "shutdown"):
        return "dead"
    return stored or "dead"


def _node_view(name: str, info: bytes | None, keys: list[bytes | None]) -> NodeView:
    alive, daemon_state, domain_state, coordinator_state, keepalive = keys
    meta = NodeInfo.decode(info) if info else NodeInfo(name=name)
    ka = Keepalive.decode(keepalive) if keepalive else Keepalive()
    return NodeView(
        name=name,
        daemon_mode=meta.daemon_mode,
        daemon_state=effective_daemon_state((daemon_state or b"").decode(), alive is not None),
        coordinator_state=(coordinator_state or b"client").decode(),
        domain_state=(domain_state or b"ready").decode(),
        domains_count=ka.domains_count,
        running_domains=ka.running_domains,
        memory_total_mib=ka.memory_total_mib,
        memory_used_mib=ka.memory_used_mib,
        memory_free_mib=ka.memory_free_mib,
        memory_allocated_mib=ka.memory_allocated_mib,
        vcpus_total=ka.vcpus_total,
        vcpus_allocated=ka.vcpus_allocated,
        load=ka.load,
        keepalive_time=ka.time,
        libvirt_uri=meta.libvirt_uri,
        migration_uri=meta.migration_uri,
        console_log_directory=meta.console_log_directory,
        pvc_version=meta.pvc_version,
        storage=ka.storage,
    )


# From the node record and its NODE_KEYS values as read (or as watched: `pvc top`).
node_view = _node_view


async def node_names(zk: ZK) -> list[str]:
    return sorted(await zk.children(Paths.nodes))


async def list_nodes(zk: ZK, names: list[str] | None = None) -> list[NodeView]:
    names = names if names is not None else await node_names(zk)
    paths = []
    for name in names:
        paths.append(Paths.node(name))
        paths.extend(Paths.node_key(name, k) for k in NODE_KEYS)
    values = await zk.get_many(paths)
    step = 1 + len(NODE_KEYS)
    views = []
    for i, name in enumerate(names):
        chunk = values[i * step : (i + 1) * step]
        if chunk[0] is None:
            continue
        views.append(_node_view(name, chunk[0], chunk[1:]))
    return views


async def get_node(zk: ZK, name: str) -> NodeView:
    views = await list_nodes(zk, [name])
    if not views:
        raise NotFound(f"unknown node {name!r}")
    return views[0]


# -- domains ---------------------------------------------------------------------------------------


async def resolve_domain(zk: ZK, ref: str) -> str:
    """The UUID of a VM named by name or UUID."""
    try:
        as_uuid = str(uuidlib.UUID(ref))
    except ValueError:
        as_uuid = ""
    if as_uuid and await zk.exists(Paths.domain(as_uuid)):
        return as_uuid
    if "/" not in ref:
        found = await zk.get_data(Paths.domain_name(ref))
        if found:
            return found.decode()
    raise NotFound(f"unknown VM {ref!r}")


async def read_domain(zk: ZK, uuid: str) -> tuple[Domain, int]:
    try:
        data, version = await zk.get(Paths.domain(uuid))
    except NoNode:
        raise NotFound(f"unknown VM {uuid!r}") from None
    return Domain.decode(data), version


async def list_domains(zk: ZK) -> list[Domain]:
    uuids = await zk.children(Paths.domains)
    values = await zk.get_many(Paths.domain(u) for u in uuids)
    return [Domain.decode(v) for v in values if v]


async def update_domain(
    zk: ZK, uuid: str, change: Callable[[Domain], Domain | None], attempts: int = 50,
    known: tuple[Domain, int] | None = None,
) -> tuple[Domain, int] | None:
    """Read-modify-write a domain record with its version (no lost updates between CLI and daemons).

    ``change`` returns the new record, or None to leave it alone. Returns (record, new version).
    ``known`` is a record and version already in hand (a daemon's watch cache): tried first, it
    saves the read; a stale one just costs the read after all."""
    for _ in range(attempts):
        if known is not None:
            (dom, version), known = known, None
        else:
            dom, version = await read_domain(zk, uuid)
        new = change(dom)
        if new is None:
            return None
        try:
            return new, await write_domain(zk, dom, version, new)
        except BadVersion:
            await asyncio.sleep(0)
    raise Conflict(f"VM {uuid} is being changed concurrently; try again")


def domain_write_ops(before: Domain, version: int, new: Domain) -> list[tuple]:
    """A VM record's versioned write with the index entries it moves (pvc.domain_index), for a
    transaction. Every write of a VM record goes through here (or ``write_domain``)."""
    return [("set", Paths.domain(new.uuid), new.encode(), version), *domain_index.ops(new.uuid, before, new)]


async def write_domain(zk: ZK, before: Domain, version: int, new: Domain) -> int:
    """Write ``new`` over ``before`` (read at ``version``); BadVersion if the record changed since.
    Returns the new version. Most changes move no index entry: one plain write."""
    ops = domain_write_ops(before, version, new)
    if len(ops) == 1:
        return await zk.set(Paths.domain(new.uuid), new.encode(), version)
    try:
        await zk.multi(ops)
    except (NoNode, NodeExists):
        await _repair_index(zk, before, new)
        raise BadVersion() from None  # the caller reads and tries again
    return version + 1


async def _repair_index(zk: ZK, before: Domain, new: Domain) -> None:
    """A transaction failed on an index entry: the record is gone (the retry says so), or the index
    is out of step for this VM (a node's folder not created yet): put it in step with ``before``."""
    if not await zk.exists(Paths.domain(before.uuid)):
        return
    old, added = domain_index.nodes_of(before), domain_index.nodes_of(new) - domain_index.nodes_of(before)
    await _create_missing(zk, domain_index.folders(old | added))
    await _create_missing(zk, [Paths.node_domain(n, before.uuid) for n in old])
    for node in added:
        try:
            await zk.delete(Paths.node_domain(node, before.uuid))
        except NoNode:
            pass


async def read_xml(zk: ZK, uuid: str) -> str:
    data = await zk.get_data(Paths.domain_xml(uuid))
    if data is None:
        raise NotFound(f"unknown VM {uuid!r}")
    return data.decode()


SETTINGS = {"migration_selector": Paths.migration_selector, "maintenance": Paths.maintenance}


async def get_setting(zk: ZK, key: str) -> str:
    path = SETTINGS.get(key) or f"{Paths.config}/{key}"
    return ((await zk.get_data(path)) or b"").decode()


async def settings(zk: ZK) -> dict[str, str]:
    return {key: await get_setting(zk, key) for key in SETTINGS}


async def set_setting(zk: ZK, key: str, value: str) -> None:
    if key not in SETTINGS:
        raise InvalidInput(f"unknown cluster setting {key!r}; known: {', '.join(SETTINGS)}")
    if key == "migration_selector":
        placement.check_selector(value)
    elif value not in ("true", "false"):
        raise InvalidInput(f"{key} must be true or false")
    await zk.put(SETTINGS[key], value.encode())


async def default_selector(zk: ZK) -> str:
    return await get_setting(zk, "migration_selector") or "mem"


async def choose_node(zk: ZK, dom: Domain, *, target: str = "", selector: str = "", exclude: str = "",
                      needs_storage: bool | None = None) -> str:
    selector = selector or dom.selector or await default_selector(zk)
    if needs_storage is None:  # a VM with RBD disks needs a node that reaches Ceph (pvc.storage)
        from pvc.storage.model import rbd_volumes_in_xml

        needs_storage = bool(rbd_volumes_in_xml(((await zk.get_data(Paths.domain_xml(dom.uuid))) or b"").decode()))
    if target and target == exclude:
        raise Conflict(f"VM {dom.name} is already on node {target}")
    return placement.choose_node(
        [n.candidate() for n in await list_nodes(zk)],
        selector=selector,
        memory_mib=dom.memory_mib,
        exclude=exclude,
        node_limit=dom.node_limit,
        target=target,
        needs_storage=needs_storage,
    )


async def request_migration(zk: ZK, uuid: str, mode: str, *, target: str = "", selector: str = "",
                            force: bool = False) -> tuple[Domain, int, str]:
    """Validate and record a migrate/move/unmigrate; returns (record, version, source node)."""
    from pvc import vm_states

    dom, _ = await read_domain(zk, uuid)
    if mode == "unmigrate":
        if not dom.previous_node:
            raise Conflict(f"VM {dom.name} has no previous node to return to")
        target = dom.previous_node
    if selector:
        placement.check_selector(selector)
    sizing = dom if dom.state == "start" else msgspec.structs.replace(dom, memory_mib=0)
    target = await choose_node(zk, sizing, target=target, selector=selector, exclude=dom.node)
    source = await get_node(zk, dom.node)
    fenced = source.daemon_state == "fenced"
    if dom.state != "start" and dom.state not in vm_states.TRANSIENT:
        vm_states.check_hand_over_possible(dom, source.daemon_state)
    result = await update_domain(zk, uuid, lambda d: vm_states.migrate_request(d, mode, target, force, fenced))
    return result[0], result[1], source.name


def _check_xml_size(name: str, xml: str) -> None:
    """Said in the VM's terms before anything is written (the adapter would refuse it too)."""
    from pvc.zk import MAX_REQUEST_BYTES

    size = len(xml.encode())
    if size > MAX_REQUEST_BYTES - 4096:  # the rest of the request: path, ACL, headers
        raise InvalidInput(f"VM {name}: its domain XML is {size / 2**20:.1f} MB; "
                           "ZooKeeper holds at most 1 MB per record")


def _volumes(xml: str) -> list[str]:
    """The RBD volumes the XML names (the record's ``volumes``: `pvc vm info` shows them)."""
    from pvc.storage.model import rbd_volumes_in_xml

    return rbd_volumes_in_xml(xml)


async def define_domain(zk: ZK, spec: DomainSpec, xml: str, *, target: str, selector: str,
                        node_limit: list[str], autostart: bool, migration_method: str) -> Domain:
    check_vm_name(spec.name)
    _check_xml_size(spec.name, xml)
    if selector:
        placement.check_selector(selector)
    dom = Domain(
        uuid=spec.uuid, name=spec.name, memory_mib=spec.memory_mib, vcpus=spec.vcpus,
        node_limit=node_limit, selector=selector, autostart=autostart,
        migration_method=migration_method, console_log_file=spec.console_log_file,
        volumes=_volumes(xml),
    )
    names = await node_names(zk)
    for n in [*node_limit, target]:
        if n and n not in names:
            raise NotFound(f"unknown node {n!r}")
    if target:
        node = target
    else:
        # Placement among running nodes; a define never fails for lack of a running node when
        # the operator names one.
        from pvc.storage.model import rbd_volumes_in_xml

        node = await choose_node(zk, dom, selector=selector, needs_storage=bool(rbd_volumes_in_xml(xml)))
    dom = msgspec.structs.replace(dom, node=node)
    ops = [
        ("create", Paths.domain_name(spec.name), spec.uuid.encode()),
        ("create", Paths.domain(spec.uuid), dom.encode()),
        ("create", Paths.domain_xml(spec.uuid), xml.encode()),
        ("create", Paths.domain_console_log(spec.uuid), b""),
        *domain_index.ops(spec.uuid, None, dom),
    ]
    try:
        try:
            await zk.multi(ops)
        except NoNode:  # the node's index folder does not exist yet (its daemon never ran)
            await _create_missing(zk, domain_index.folders(domain_index.nodes_of(dom)))
            await zk.multi(ops)
    except NodeExists:
        if await zk.exists(Paths.domain(spec.uuid)):
            raise Conflict(f"a VM with UUID {spec.uuid} is already defined") from None
        raise Conflict(f"a VM named {spec.name!r} is already defined") from None
    return dom


async def modify_domain(zk: ZK, uuid: str, spec: DomainSpec, xml: str) -> Domain:
    dom, version = await read_domain(zk, uuid)
    _check_xml_size(dom.name, xml)
    if spec.uuid != uuid:
        raise InvalidInput(f"the new XML has UUID {spec.uuid}, VM {dom.name} has {uuid}")
    renamed = dom
    if spec.name != dom.name:  # a rename, as `pvc vm rename` makes it: stopped only, its node follows
        check_vm_name(spec.name)
        renamed = vm_states.renamed(dom, spec.name)
    new = msgspec.structs.replace(
        renamed, memory_mib=spec.memory_mib, vcpus=spec.vcpus, console_log_file=spec.console_log_file,
        volumes=_volumes(xml),
    )
    return await _write_definition(zk, dom, version, new, xml, doing="modified")


async def rename_domain(zk: ZK, uuid: str, new_name: str) -> Domain:
    """Rename a stopped VM: its record, its name index entry and its stored XML (<name> and a serial
    log file named after it) in one transaction; its node's daemon follows (``renamed_from``)."""
    from pvc.domain_xml import renamed, renamed_log_file

    check_vm_name(new_name)
    dom, version = await read_domain(zk, uuid)
    new = vm_states.renamed(dom, new_name)
    xml, xml_version = await zk.get(Paths.domain_xml(uuid))
    new_xml = renamed(xml.decode(), dom.name, new_name)
    new = msgspec.structs.replace(new, console_log_file=renamed_log_file(dom.console_log_file, dom.name, new_name))
    return await _write_definition(zk, dom, version, new, new_xml, xml_version, doing="renamed")


async def _write_definition(zk: ZK, dom: Domain, version: int, new: Domain, xml: str, xml_version: int = -1, *,
                            doing: str) -> Domain:
    """A VM's record and stored XML in one transaction, its name index entry moved if the name changed."""
    ops: list[tuple] = [*domain_write_ops(dom, version, new), ("set", Paths.domain_xml(dom.uuid), xml.encode(), xml_version)]
    if new.name != dom.name:
        ops += [("delete", Paths.domain_name(dom.name)), ("create", Paths.domain_name(new.name), dom.uuid.encode())]
    try:
        await zk.multi(ops)
    except NodeExists:
        raise Conflict(f"a VM named {new.name!r} is already defined") from None
    except (BadVersion, NoNode):
        raise Conflict(f"VM {dom.name} changed while it was being {doing}; try again") from None
    return new


async def undefine_domain(zk: ZK, uuid: str) -> Domain:
    dom, version = await read_domain(zk, uuid)
    if dom.state not in ("stop", "disable", "fail") or dom.libvirt_state == "running":
        raise Conflict(f"VM {dom.name} is {dom.state}; stop it before undefining it")
    children = await zk.children(Paths.domain(uuid))
    log = Paths.domain_console_log(uuid)  # its children: the console log's chunks (docs/schema.md)
    chunks = await zk.children(log) if log.rpartition("/")[2] in children else []
    try:
        await zk.multi([
            *(("delete", f"{log}/{c}") for c in chunks),
            *(("delete", f"{Paths.domain(uuid)}/{c}") for c in children),
            ("delete", Paths.domain(uuid), version),
            ("delete", Paths.domain_name(dom.name)),
            *domain_index.ops(uuid, dom, None),
        ])
    except (BadVersion, NoNode, PvcError):
        raise Conflict(f"VM {dom.name} changed while it was being undefined; try again") from None
    return dom
