"""Reading what pvc needs from a libvirt domain XML (pure)."""

from __future__ import annotations

import math
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pvc.errors import InvalidInput

_MIB = {
    "b": 1 / 2**20, "bytes": 1 / 2**20,
    "kb": 1000 / 2**20, "k": 1 / 1024, "kib": 1 / 1024,
    "mb": 10**6 / 2**20, "m": 1, "mib": 1,
    "gb": 10**9 / 2**20, "g": 1024, "gib": 1024,
    "tb": 10**12 / 2**20, "t": 2**20, "tib": 2**20,
}


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    console_log_file: str


def parse_domain_xml(xml: str) -> DomainSpec:
    """Validate a domain XML; raise InvalidInput with one line saying what is wrong."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInput(f"malformed domain XML: {exc}") from None
    if root.tag != "domain":
        raise InvalidInput(f"not a libvirt domain XML: root element is <{root.tag}>, expected <domain>")
    name = root.findtext("name") or ""  # as libvirt reads it (no stripping); pvc.names judges it at define
    if not name.strip():
        raise InvalidInput("domain XML has no <name>")
    raw_uuid = (root.findtext("uuid") or "").strip()
    if not raw_uuid:
        raise InvalidInput("domain XML has no <uuid>")
    try:
        uuid = str(uuidlib.UUID(raw_uuid))
    except ValueError:
        raise InvalidInput(f"domain XML has an invalid <uuid>: {raw_uuid!r}") from None
    return DomainSpec(
        name=name,
        uuid=uuid,
        memory_mib=_memory_mib(root),
        vcpus=_vcpus(root),
        console_log_file=_serial_log(root),
    )


def _int(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidInput(f"domain XML has an invalid <{what}>: {text.strip()!r}") from None
    if value < 0:
        raise InvalidInput(f"domain XML has a negative <{what}>")
    return value


def _vcpus(root: ET.Element) -> int:
    value = _int(root.findtext("vcpu") or "1", "vcpu")
    if value < 1:
        raise InvalidInput("domain XML has <vcpu> 0; a VM needs at least one")
    return value


def _memory_mib(root: ET.Element) -> int:
    element = root.find("memory")
    if element is None:
        element = root.find("currentMemory")
    if element is None:
        raise InvalidInput("domain XML has no <memory>")
    unit = element.get("unit", "KiB").lower()
    if unit not in _MIB:
        raise InvalidInput(f"domain XML <memory> has an unknown unit {unit!r}")
    # Rounded up: placement must never under-count what a VM takes.
    return max(1, math.ceil(_int(element.text or "", "memory") * _MIB[unit]))


def _serial_log(root: ET.Element) -> str:
    for device in ("serial", "console"):
        for element in root.iterfind(f"devices/{device}/log"):
            if element.get("file"):
                return element.get("file", "")
    return ""


def renamed_log_file(path: str, old: str, new: str) -> str:
    """The console log path a VM renamed from ``old`` to ``new`` logs to: ``<dir>/<old>.log`` follows
    the name (pvc's convention, ``<console_log.directory>/<name>.log``); any other path is kept."""
    directory, _, base = path.rpartition("/")
    return f"{directory}/{new}.log" if path and base == f"{old}.log" else path


def renamed(xml: str, old: str, new: str) -> str:
    """``xml`` with its <name> ``old`` -> ``new`` and a serial log file named after it following.

    A targeted substitution, not a re-serialisation: the operator's XML keeps its layout, comments
    and namespaces. Names are pvc.names-valid (no XML special characters), so they stand as text."""
    spec = parse_domain_xml(xml)
    if spec.name != old:
        raise InvalidInput(f"the stored XML is named {spec.name!r}, not {old!r}")
    out, count = re.subn(rf"(<name>\s*){re.escape(old)}(\s*</name>)", rf"\g<1>{new}\g<2>", xml, count=1)
    log = spec.console_log_file
    moved = renamed_log_file(log, old, new)
    if moved != log:
        out = re.sub(rf"(<log\b[^>]*\bfile=)(['\"]){re.escape(log)}\2", rf"\g<1>\g<2>{moved}\g<2>", out)
    after = parse_domain_xml(out)
    if count != 1 or after.name != new or after.console_log_file != moved:
        raise InvalidInput(f"cannot rename {old!r} in this domain XML (its <name> is not plain text); "
                           "use pvc vm modify")
    return out
