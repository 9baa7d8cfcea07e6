"""VM disks on RBD, the pure part: reading a VM's RBD disks from its domain XML, adding and removing
one, filling in what a node must add before libvirt can open them, and what differs between a
running domain and its stored definition. No I/O.

A VM's stored XML names a volume without monitors or credentials::

    <disk type='network' device='disk'>
      <source protocol='rbd' name='POOL/VOLUME'/>
      <target dev='vda' bus='virtio'/>
    </disk>

so that one definition runs on every node. The node that starts (or live-attaches) it fills in the
monitors (``<host>``, from the cluster's ceph.conf) and the auth (``<auth username=...><secret
type='ceph' uuid=.../></auth>``, from its own ``storage.ceph`` config): :func:`fill_rbd_disks`.
A live migration sends the source's running (already filled) XML; the monitors and the secret UUID
are the same cluster-wide, so it opens as it is on the target.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pvc.errors import Conflict, InvalidInput

# The port a monitor address without one listens on (msgr v2; librados tries v1 there too).
DEFAULT_MON_PORT = 3300
# How a node's note (in the VM record) starts when it could not apply a disk change live.
LIVE_FAILED = "disk change not applied live"

ET.register_namespace("qemu", "http://libvirt.org/schemas/domain/qemu/1.0")


@dataclass(frozen=True)
class RbdDisk:
    ref: str  # POOL/VOLUME
    target: str  # the guest's device name (vda)
    shareable: bool


# -- ceph.conf ------------------------------------------------------------------------------------------


def parse_mon_hosts(conf_text: str) -> list[tuple[str, int]]:
    """The monitors of a ceph.conf's ``mon host`` ([global]), as (host, port), one per monitor,
    preferring its msgr v2 address: ``v2:10.0.0.1:3300``, ``[v2:10.0.0.1:3300,v1:10.0.0.1:6789]``,
    ``10.0.0.1:6789``, ``10.0.0.1`` (port 3300), ``[::1]:3300``; separated by spaces or commas."""
    value = ""
    section = ""
    for raw in conf_text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        key, sep, val = line.partition("=")
        if sep and section in ("global", "") and re.sub(r"[\s_-]+", "_", key.strip().lower()) == "mon_host":
            value = val.strip()
    monitors: list[tuple[str, int]] = []
    # One monitor is either a bracketed vector of addresses ([v2:a:p,v1:a:p]) or one address.
    for group in re.findall(r"\[v[12]:(?:[^\[\]]|\[[^\]]*\])*\]|[^\s,]+", value):
        addrs = group[1:-1].split(",") if group.startswith("[v") else [group]
        parsed = [_mon_addr(a.strip()) for a in addrs if a.strip()]
        if not parsed:
            continue
        v2 = [p for p in parsed if p[0] == "v2"] or [p for p in parsed if p[0] == ""] or parsed
        monitor = (v2[0][1], v2[0][2])
        if monitor not in monitors:
            monitors.append(monitor)
    return monitors


def _mon_addr(text: str) -> tuple[str, str, int]:
    """``v2:1.2.3.4:3300`` -> ("v2", "1.2.3.4", 3300); ``[::1]:6789``; ``host`` (default port)."""
    proto = ""
    if text[:3] in ("v1:", "v2:"):
        proto, text = text[:2], text[3:]
    text = text.split("/", 1)[0]  # a nonce: 1.2.3.4:3300/0
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""  # a bare name, IPv4, or an unbracketed IPv6 without port
    try:
        number = int(port) if port else DEFAULT_MON_PORT
    except ValueError:
        raise InvalidInput(f"ceph.conf: bad monitor address {text!r}") from None
    return proto, host, number


# -- reading and changing a domain XML --------------------------------------------------------------------


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInput(f"malformed domain XML: {exc}") from None


def _rbd_elements(root: ET.Element):
    devices = root.find("devices")
    if devices is None:
        return
    for disk in devices.findall("disk"):
        source = disk.find("source")
        if disk.get("type") == "network" and source is not None and source.get("protocol") == "rbd":
            yield disk, source


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    return (target.get("dev") or "") if target is not None else ""


def rbd_disks(xml: str) -> list[RbdDisk]:
    """The RBD disks of a domain XML, in document order."""
    if "rbd" not in xml:
        return []
    return [RbdDisk(ref=(source.get("name") or "").split("@", 1)[0], target=_target(disk),
                    shareable=disk.find("shareable") is not None)
            for disk, source in _rbd_elements(_parse(xml))]


def target_devs(xml: str) -> list[str]:
    """The target devices of every disk (RBD or not) of a domain XML."""
    root = _parse(xml)
    return [_target(d) for d in root.iterfind("./devices/disk") if _target(d)]


def check_disks(xml: str) -> list[RbdDisk]:
    """A domain XML's RBD disks, refusing what can never start: a disk without a POOL/VOLUME name,
    a volume named twice, two disks on one target device."""
    from pvc.storage.model import split_volume_ref

    disks = rbd_disks(xml)
    seen: set[str] = set()
    for disk in disks:
        split_volume_ref(disk.ref)
        if disk.ref in seen:
            raise InvalidInput(f"the domain XML names volume {disk.ref} twice")
        seen.add(disk.ref)
    targets = target_devs(xml) if disks else []
    for dev in targets:
        if targets.count(dev) > 1:
            raise InvalidInput(f"the domain XML has two disks on target dev {dev}")
    return disks


def next_target(used: list[str], prefix: str = "vd") -> str:
    """The first free ``vdX`` (vda, vdb, ... vdz, vdaa, ...)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(26 * 27):
        name = prefix + (letters[i] if i < 26 else letters[i // 26 - 1] + letters[i % 26])
        if name not in used:
            return name
    raise Conflict("no free target device name")


_TARGET_DEV = re.compile(r"^(vd|sd|hd|xvd)[a-z]{1,3}$")


def disk_element(ref: str, target: str, shareable: bool = False) -> str:
    """The disk element pvc writes for a volume (no monitors, no auth: filled in by the node)."""
    bus = {"vd": "virtio", "sd": "scsi", "hd": "ide", "xv": "xen"}[target[:2]]
    return (f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source protocol='rbd' name='{ref}'/><target dev='{target}' bus='{bus}'/>"
            + ("<shareable/>" if shareable else "") + "</disk>")


def add_disk(xml: str, ref: str, target: str = "", shareable: bool = False) -> tuple[str, str]:
    """The domain XML with a disk for volume ``ref`` added; returns (new XML, its target dev).
    Refuses a volume the VM already has and a target dev already used."""
    disks = rbd_disks(xml)
    if any(d.ref == ref for d in disks):
        raise Conflict(f"the VM already has volume {ref} (target {next(d.target for d in disks if d.ref == ref)})")
    used = target_devs(xml)
    if target:
        if not _TARGET_DEV.match(target):
            raise InvalidInput(f"bad target dev {target!r}: expected a name like vdb (virtio), sdb or hdb")
        if target in used:
            raise Conflict(f"target dev {target} is already used by another of the VM's disks")
    else:
        target = next_target(used)
    root = _parse(xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    element = ET.fromstring(disk_element(ref, target, shareable))
    # After the last disk, else first: libvirt does not mind the order, people reading it do.
    children = list(devices)
    last_disk = max((i for i, c in enumerate(children) if c.tag == "disk"), default=-1)
    element.tail = children[last_disk].tail if last_disk >= 0 else (devices.text or None)
    devices.insert(last_disk + 1, element)
    return ET.tostring(root, encoding="unicode"), target


def remove_disk(xml: str, ref: str) -> str:
    """The domain XML without its disk for volume ``ref``."""
    root = _parse(xml)
    devices = root.find("devices")
    for disk, source in list(_rbd_elements(root)):
        if (source.get("name") or "").split("@", 1)[0] == ref:
            devices.remove(disk)
            return ET.tostring(root, encoding="unicode")
    raise Conflict(f"the VM has no volume {ref}")


# -- what a node fills in ------------------------------------------------------------------------------


def needs_filling(xml: str) -> bool:
    """Does any RBD disk lack its monitors or its auth?"""
    if "rbd" not in xml:
        return False
    return any(source.find("host") is None or disk.find("auth") is None
               for disk, source in _rbd_elements(_parse(xml)))


def _fill(disk: ET.Element, source: ET.Element, monitors: list[tuple[str, int]], username: str,
          secret_uuid: str) -> None:
    if source.find("host") is None:
        if not monitors:
            raise InvalidInput(f"cannot open RBD disk {source.get('name')}: the ceph.conf names no monitor")
        for host, port in monitors:
            ET.SubElement(source, "host", {"name": host, "port": str(port)})
    if disk.find("auth") is None and source.find("auth") is None:
        if not secret_uuid:
            raise InvalidInput(f"cannot open RBD disk {source.get('name')}: storage.ceph.secret_uuid is not set "
                               "(the libvirt secret that holds the Ceph key)")
        auth = ET.Element("auth", {"username": username})
        ET.SubElement(auth, "secret", {"type": "ceph", "uuid": secret_uuid})
        # Where libvirt itself puts it: right before <source>.
        disk.insert(list(disk).index(source), auth)


def fill_rbd_disks(xml: str, monitors: list[tuple[str, int]], username: str, secret_uuid: str) -> str:
    """The domain XML as this node starts it: each RBD disk without ``<host>`` gets the cluster's
    monitors, and each without ``<auth>`` gets ``username`` (the Ceph client without ``client.``)
    and the libvirt secret ``secret_uuid``. What the operator wrote is kept; an XML without RBD
    disks is returned unchanged (same string)."""
    if not needs_filling(xml):
        return xml
    root = _parse(xml)
    for disk, source in _rbd_elements(root):
        _fill(disk, source, monitors, username, secret_uuid)
    return ET.tostring(root, encoding="unicode")


def fill_disk_element(disk_xml: str, monitors: list[tuple[str, int]], username: str, secret_uuid: str) -> str:
    """:func:`fill_rbd_disks` for one ``<disk>`` element (a live attach)."""
    disk = ET.fromstring(disk_xml)
    source = disk.find("source")
    if disk.get("type") == "network" and source is not None and source.get("protocol") == "rbd":
        _fill(disk, source, monitors, username, secret_uuid)
    return ET.tostring(disk, encoding="unicode")


# -- a running domain against its definition -----------------------------------------------------------------


@dataclass(frozen=True)
class DiskChanges:
    attach: list[tuple[str, str]]  # (ref, disk element XML from the stored definition)
    detach: list[tuple[str, str]]  # (ref, disk element XML from the running domain)

    def __bool__(self) -> bool:
        return bool(self.attach or self.detach)


def disk_changes(stored_xml: str, running_xml: str) -> DiskChanges:
    """Which RBD disks to attach to (in the definition, not running) and detach from (running, no
    longer in the definition) a running domain, matched by volume. Other devices are left alone."""
    def by_ref(xml: str) -> dict[str, str]:
        if "rbd" not in xml:
            return {}
        return {(source.get("name") or "").split("@", 1)[0]: _element_xml(disk)
                for disk, source in _rbd_elements(_parse(xml))}

    stored, running = by_ref(stored_xml), by_ref(running_xml)
    return DiskChanges(attach=[(ref, x) for ref, x in stored.items() if ref not in running],
                       detach=[(ref, x) for ref, x in running.items() if ref not in stored])


def _element_xml(element: ET.Element) -> str:
    tail, element.tail = element.tail, None
    try:
        return ET.tostring(element, encoding="unicode")
    finally:
        element.tail = tail


# -- fencing: cutting a dead node's Ceph clients off -------------------------------------------------------


def fence_plan(statuses: dict[str, dict | None], locks: dict[str, list | None]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """From ``rbd status`` and ``rbd lock ls`` (``--format json``) of the volumes a fenced node's VMs
    used: the client addresses to blocklist (every watcher and lock holder: on a node confirmed
    off, they are its QEMUs), and the locks to remove afterwards, as (POOL/VOLUME, lock id, locker)."""
    addrs: list[str] = []
    for ref in statuses:
        for w in (statuses[ref] or {}).get("watchers", []) or []:
            if w.get("address") and w["address"] not in addrs:
                addrs.append(w["address"])
        for lock in locks.get(ref) or []:
            if lock.get("address") and lock["address"] not in addrs:
                addrs.append(lock["address"])
    to_remove = [(ref, lock["id"], lock["locker"]) for ref in locks for lock in locks[ref] or []
                 if lock.get("address") in addrs and lock.get("id") and lock.get("locker")]
    return addrs, to_remove


def unblock_due(alive: bool, daemon_state: str, domain_state: str, blocklisted: list[str]) -> bool:
    """A fenced node's blocklist entries go once its daemon is back, running and the node ready."""
    return bool(blocklisted) and alive and daemon_state == "run" and domain_state == "ready"
