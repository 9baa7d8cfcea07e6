"""Storage, the pure part: sizes, names, the records `pvc storage ... -o json` prints, reading the
Ceph CLIs' JSON into them, and finding the RBD volumes a VM's domain XML names. No I/O."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from pvc.errors import InvalidInput

# -- sizes -------------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)
MAX_VOLUME_BYTES = 1 << 50  # 1 PiB: far beyond any real volume, catches typos like 10000T
SECTOR = 512


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5T``, ``4096`` (bytes) -> bytes. Binary units (K = 1024); ``GiB``,
    ``GB`` and ``G`` mean the same. A whole number of 512-byte sectors, at least one."""
    match = _SIZE.match(text or "")
    if not match:
        raise InvalidInput(f"bad size {text!r}: expected a number with an optional unit K, M, G, T or P "
                           "(binary: 1K = 1024 bytes), like 10G or 512M")
    number, unit = match.groups()
    from fractions import Fraction

    exact = Fraction(number) * _UNITS[unit.upper()]
    if exact.denominator != 1:
        raise InvalidInput(f"bad size {text!r}: not a whole number of bytes")
    value = int(exact)
    if value <= 0:
        raise InvalidInput(f"bad size {text!r}: must be greater than 0")
    if value % SECTOR:
        raise InvalidInput(f"bad size {text!r}: must be a multiple of {SECTOR} bytes")
    if value > MAX_VOLUME_BYTES:
        raise InvalidInput(f"bad size {text!r}: larger than 1P")
    return value


def format_size(size: int | float) -> str:
    """Bytes as people read them: 10G, 512M, 1.5G, 4096B."""
    size = int(size)
    for unit in ("P", "T", "G", "M", "K"):
        factor = _UNITS[unit]
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


# -- names -------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(kind: str, name: str) -> str:
    """A pool, volume or snapshot name: letters, digits, ``_ . -`` (not first), at most 100
    characters. Nothing that Ceph or a domain XML's ``POOL/VOLUME@SNAP`` would read otherwise."""
    if not _NAME.match(name or ""):
        raise InvalidInput(f"bad {kind} name {name!r}: use letters, digits, '_', '.' and '-' "
                           "(not first), at most 100 characters")
    return name


def check_pgs(pgs: int) -> int:
    if pgs < 1 or pgs > 32768 or pgs & (pgs - 1):
        raise InvalidInput(f"bad --pgs {pgs}: must be a power of two from 1 to 32768 (Ceph warns otherwise)")
    return pgs


def check_replicas(replicas: int) -> int:
    if not 1 <= replicas <= 10:
        raise InvalidInput(f"bad --replicas {replicas}: must be from 1 to 10")
    return replicas


def volume_ref(pool: str, volume: str) -> str:
    return f"{pool}/{volume}"


def split_volume_ref(ref: str) -> tuple[str, str]:
    """``POOL/VOLUME`` -> (pool, volume), both checked."""
    pool, sep, volume = (ref or "").partition("/")
    if not sep:
        raise InvalidInput(f"bad volume {ref!r}: expected POOL/VOLUME")
    return check_name("pool", pool), check_name("volume", volume)


# -- domain XML ----------------------------------------------------------------------------------------


def rbd_volumes_in_xml(xml: str) -> list[str]:
    """Every ``POOL/VOLUME`` a domain XML uses as an RBD disk (``<disk type='network'>`` with
    ``<source protocol='rbd' name='POOL/VOLUME'>``), in document order, without duplicates."""
    if "rbd" not in xml:  # the common case costs no parse
        return []
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    found: list[str] = []
    for disk in root.iterfind("./devices/disk"):
        source = disk.find("source")
        if disk.get("type") != "network" or source is None or source.get("protocol") != "rbd":
            continue
        name = (source.get("name") or "").split("@", 1)[0]
        if name and name not in found:
            found.append(name)
    return found


# -- records (`-o json`) -------------------------------------------------------------------------------


class OsdView(msgspec.Struct, kw_only=True):
    id: int
    name: str
    up: bool
    size_bytes: int
    used_bytes: int
    utilization: float  # percent
    pgs: int


class StorageStatus(msgspec.Struct, kw_only=True):
    health: str  # HEALTH_OK | HEALTH_WARN | HEALTH_ERR
    checks: list[str]  # one line per health check that is not OK
    bytes_total: int
    bytes_used: int
    bytes_avail: int
    pools: int
    osds_total: int
    osds_up: int
    osds_in: int
    osds: list[OsdView]


class PoolView(msgspec.Struct, kw_only=True):
    name: str
    pgs: int
    replicas: int
    stored_bytes: int
    volumes: list[str]


class SnapshotView(msgspec.Struct, kw_only=True):
    name: str
    size_bytes: int
    protected: bool
    timestamp: str


class VolumeView(msgspec.Struct, kw_only=True):
    pool: str
    name: str
    size_bytes: int
    used_by: str | None  # the VM whose XML names this volume
    snapshots: list[str]


def parse_status(status: dict[str, Any], osd_df: dict[str, Any]) -> StorageStatus:
    """`ceph status` and `ceph osd df` (``--format json``) -> StorageStatus."""
    health = status.get("health", {})
    checks = [f"{name}: {check.get('summary', {}).get('message', '')}"
              for name, check in sorted((health.get("checks") or {}).items())]
    pgmap, osdmap = status.get("pgmap", {}), status.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)  # older releases nest it once more
    osds = [OsdView(id=n["id"], name=n.get("name", f"osd.{n['id']}"), up=n.get("status") == "up",
                    size_bytes=n.get("kb", 0) * 1024, used_bytes=n.get("kb_used", 0) * 1024,
                    utilization=round(float(n.get("utilization", 0.0)), 2), pgs=n.get("pgs", 0))
            for n in osd_df.get("nodes", []) if n.get("type", "osd") == "osd"]
    return StorageStatus(
        health=health.get("status", "HEALTH_UNKNOWN"), checks=checks,
        bytes_total=pgmap.get("bytes_total", 0), bytes_used=pgmap.get("bytes_used", 0),
        bytes_avail=pgmap.get("bytes_avail", 0), pools=pgmap.get("num_pools", 0),
        osds_total=osdmap.get("num_osds", 0), osds_up=osdmap.get("num_up_osds", 0),
        osds_in=osdmap.get("num_in_osds", 0), osds=osds,
    )


def parse_pools(detail: list[dict[str, Any]], df: dict[str, Any], volumes: dict[str, list[str]]) -> list[PoolView]:
    """`ceph osd pool ls detail` and `ceph df` (``--format json``) plus each pool's volumes."""
    stored = {p["name"]: p.get("stats", {}).get("stored", 0) for p in df.get("pools", [])}
    return sorted(
        (PoolView(name=p["pool_name"], pgs=p.get("pg_num", 0), replicas=p.get("size", 0),
                  stored_bytes=stored.get(p["pool_name"], 0), volumes=volumes.get(p["pool_name"], []))
         for p in detail if p["pool_name"] in volumes),
        key=lambda p: p.name)


def parse_volumes(pool: str, listing: list[dict[str, Any]], users: dict[str, str]) -> list[VolumeView]:
    """`rbd ls -l --format json` (images and their snapshots) -> volumes, by name."""
    snaps: dict[str, list[str]] = {}
    images: dict[str, int] = {}
    for entry in listing:
        if "snapshot" in entry:
            snaps.setdefault(entry["image"], []).append(entry["snapshot"])
        else:
            images[entry["image"]] = entry.get("size", 0)
    return [VolumeView(pool=pool, name=name, size_bytes=size, used_by=users.get(volume_ref(pool, name)),
                       snapshots=snaps.get(name, []))
            for name, size in sorted(images.items())]


def parse_snapshots(listing: list[dict[str, Any]]) -> list[SnapshotView]:
    """`rbd snap ls --format json` -> snapshots, oldest first."""
    return [SnapshotView(name=s["name"], size_bytes=s.get("size", 0),
                         protected=str(s.get("protected", "false")).lower() == "true",
                         timestamp=s.get("timestamp", ""))
            for s in sorted(listing, key=lambda s: s.get("id", 0))]
