"""Reading a libvirt domain XML (pvc.domain_xml.parse_domain_xml)."""

from __future__ import annotations

import uuid as uuidlib
from xml.sax.saxutils import escape

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.domain_xml import DomainSpec, parse_domain_xml
from pvc.errors import InvalidInput

UUID = "8c2b1bd4-5d8f-4a1e-9b52-2c9f3f0a7e11"


def xml(name: str | None = "vm1", uuid: str | None = UUID, memory: str | None = "<memory unit='MiB'>512</memory>",
        vcpu: str | None = "<vcpu placement='static'>2</vcpu>", devices: str = "", root: str = "domain") -> str:
    parts = [f"<{root} type='kvm'>"]
    if name is not None:
        parts.append(f"<name>{name}</name>")
    if uuid is not None:
        parts.append(f"<uuid>{uuid}</uuid>")
    if memory is not None:
        parts.append(memory)
    if vcpu is not None:
        parts.append(vcpu)
    parts.append(f"<os><type arch='x86_64'>hvm</type></os><devices>{devices}</devices></{root}>")
    return "".join(parts)


def invalid(text: str) -> str:
    with pytest.raises(InvalidInput) as exc:
        parse_domain_xml(text)
    msg = str(exc.value)
    assert msg and "\n" not in msg, repr(msg)
    return msg


def test_full_spec():
    devices = "<serial type='pty'><log file='/var/log/libvirt/vm1.log' append='on'/></serial>"
    assert parse_domain_xml(xml(devices=devices)) == DomainSpec(
        name="vm1", uuid=UUID, memory_mib=512, vcpus=2, console_log_file="/var/log/libvirt/vm1.log",
    )


def test_whitespace_around_values_is_ignored():
    # Except around the name: libvirt keeps it, so pvc does too (and refuses it at define: pvc.names).
    spec = parse_domain_xml(xml(name="  vm1\n", uuid=f"\n {UUID} ", memory="<memory unit='MiB'> 64 </memory>",
                                vcpu="<vcpu> 3 </vcpu>"))
    assert (spec.name, spec.uuid, spec.memory_mib, spec.vcpus) == ("  vm1\n", UUID, 64, 3)


def test_xml_declaration_accepted():
    spec = parse_domain_xml("<?xml version='1.0'?>\n" + xml())
    assert spec.name == "vm1"


# -- uuid -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [UUID.upper(), UUID.replace("-", ""), UUID.replace("-", "").upper()])
def test_uuid_normalised_to_canonical_lowercase(raw):
    assert parse_domain_xml(xml(uuid=raw)).uuid == UUID


@given(st.uuids())
def test_uuid_roundtrip(u):
    assert parse_domain_xml(xml(uuid=str(u))).uuid == str(u)


# -- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,unit,mib", [
    ("524288", None, 512),           # libvirt's default unit is KiB
    ("524288", "KiB", 512),
    ("524288", "k", 512),
    ("524288", "kib", 512),
    ("512", "MiB", 512),
    ("512", "M", 512),
    ("2", "GiB", 2048),
    ("2", "G", 2048),
    ("1", "TiB", 1048576),
    ("1", "T", 1048576),
    ("536870912", "b", 512),
    ("536870912", "bytes", 512),
    ("1000", "MB", 954),             # 10^9 bytes = 953.67 MiB
    ("1", "GB", 954),
    ("1048576", "KB", 1000),         # 1048576 * 1000 bytes = 1000 MiB
    ("1", "TB", 953675),
    ("1", "KiB", 1),                 # never 0: a VM always takes some memory
    ("0", "MiB", 1),
])
def test_memory_units(value, unit, mib):
    attr = f" unit='{unit}'" if unit is not None else ""
    assert parse_domain_xml(xml(memory=f"<memory{attr}>{value}</memory>")).memory_mib == mib


def test_memory_unit_case_insensitive():
    assert parse_domain_xml(xml(memory="<memory unit='gib'>1</memory>")).memory_mib == 1024
    assert parse_domain_xml(xml(memory="<memory unit='GIB'>1</memory>")).memory_mib == 1024


def test_current_memory_used_when_memory_missing():
    assert parse_domain_xml(xml(memory="<currentMemory unit='MiB'>256</currentMemory>")).memory_mib == 256


def test_memory_preferred_over_current_memory():
    mem = "<memory unit='MiB'>1024</memory><currentMemory unit='MiB'>256</currentMemory>"
    assert parse_domain_xml(xml(memory=mem)).memory_mib == 1024


@given(st.integers(1, 2**20))
def test_memory_mib_roundtrip(mib):
    assert parse_domain_xml(xml(memory=f"<memory unit='MiB'>{mib}</memory>")).memory_mib == mib
    assert parse_domain_xml(xml(memory=f"<memory>{mib * 1024}</memory>")).memory_mib == mib


# -- vcpu -----------------------------------------------------------------------------------------


def test_vcpu_defaults_to_one():
    assert parse_domain_xml(xml(vcpu=None)).vcpus == 1


@given(st.integers(1, 4096))
def test_vcpu_values(n):
    assert parse_domain_xml(xml(vcpu=f"<vcpu>{n}</vcpu>")).vcpus == n


@pytest.mark.parametrize("text", ["two", "1.5", "0x2", "2 cpus"])
def test_bad_vcpu(text):
    msg = invalid(xml(vcpu=f"<vcpu>{text}</vcpu>"))
    assert "<vcpu>" in msg and repr(text) in msg


def test_negative_vcpu():
    assert "negative <vcpu>" in invalid(xml(vcpu="<vcpu>-1</vcpu>"))


def test_zero_vcpu_refused():
    # Regression: libvirt refuses a domain without vCPUs, so pvc should say so at define time
    # instead of accepting a VM that can never start.
    assert "<vcpu>" in invalid(xml(vcpu="<vcpu>0</vcpu>"))


# -- serial log -----------------------------------------------------------------------------------


def test_no_devices_no_log():
    assert parse_domain_xml(xml()).console_log_file == ""


def test_serial_without_log_no_log():
    assert parse_domain_xml(xml(devices="<serial type='pty'><target port='0'/></serial>")).console_log_file == ""


def test_console_log_used_when_no_serial_log():
    devices = "<console type='pty'><log file='/logs/c.log'/></console>"
    assert parse_domain_xml(xml(devices=devices)).console_log_file == "/logs/c.log"


def test_serial_log_preferred_over_console_log_whatever_the_order():
    devices = "<console type='pty'><log file='/logs/c.log'/></console><serial type='pty'><log file='/logs/s.log'/></serial>"
    assert parse_domain_xml(xml(devices=devices)).console_log_file == "/logs/s.log"


def test_first_serial_with_a_file_wins():
    devices = ("<serial type='pty'><log file=''/></serial>"
               "<serial type='pty'><log file='/logs/second.log'/></serial>"
               "<serial type='pty'><log file='/logs/third.log'/></serial>")
    assert parse_domain_xml(xml(devices=devices)).console_log_file == "/logs/second.log"


def test_log_outside_devices_is_ignored():
    text = xml().replace("<devices>", "<serial><log file='/wrong.log'/></serial><devices>")
    assert parse_domain_xml(text).console_log_file == ""


# -- names ----------------------------------------------------------------------------------------


@given(st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_.+"),
               min_size=1, max_size=40).filter(lambda s: not s.startswith(".")))
def test_name_roundtrip(name):
    assert parse_domain_xml(xml(name=escape(name))).name == name


def test_name_with_xml_entities():
    assert parse_domain_xml(xml(name="a&amp;b")).name == "a&b"


def test_name_read_as_libvirt_reads_it():
    # Not stripped: pvc and libvirt must agree on the name (pvc.names refuses the spaces at define).
    assert parse_domain_xml(xml(name=" web ")).name == " web "


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "not xml", "<domain>", "<domain><name>a</domain>", "<a/><b/>",
                                  "<domain type='kvm'", "\x00"])
def test_malformed_xml(text):
    assert invalid(text).startswith("malformed domain XML")


@pytest.mark.parametrize("root", ["vm", "network", "Domain"])
def test_wrong_root(root):
    msg = invalid(xml(root=root))
    assert f"<{root}>" in msg and "expected <domain>" in msg


def test_namespaced_root_refused():
    assert "expected <domain>" in invalid(f"<domain xmlns='urn:x'><name>a</name><uuid>{UUID}</uuid></domain>")


@pytest.mark.parametrize("name", [None, "", "   "])
def test_missing_name(name):
    assert invalid(xml(name=name)) == "domain XML has no <name>"


@pytest.mark.parametrize("uuid", [None, "", "  "])
def test_missing_uuid(uuid):
    assert invalid(xml(uuid=uuid)) == "domain XML has no <uuid>"


@pytest.mark.parametrize("uuid", ["nope", UUID[:-1], UUID + "0", UUID.replace("8", "g", 1), "1234"])
def test_bad_uuid(uuid):
    msg = invalid(xml(uuid=uuid))
    assert "invalid <uuid>" in msg and repr(uuid) in msg


def test_missing_memory():
    assert invalid(xml(memory=None)) == "domain XML has no <memory>"


@pytest.mark.parametrize("value", ["", "lots", "1.5", "1e3", "512M"])
def test_bad_memory_value(value):
    msg = invalid(xml(memory=f"<memory unit='MiB'>{value}</memory>"))
    assert "invalid <memory>" in msg and repr(value) in msg


def test_negative_memory():
    assert "negative <memory>" in invalid(xml(memory="<memory unit='MiB'>-512</memory>"))


@pytest.mark.parametrize("unit", ["parsec", "", "KiBs", "pages"])
def test_bad_memory_unit(unit):
    msg = invalid(xml(memory=f"<memory unit='{unit}'>512</memory>"))
    assert "unknown unit" in msg and repr(unit.lower()) in msg


def test_checks_in_order_name_then_uuid_then_memory():
    assert "no <name>" in invalid(xml(name=None, uuid=None, memory=None))
    assert "no <uuid>" in invalid(xml(uuid=None, memory=None))
    assert "no <memory>" in invalid(xml(memory=None))


@given(st.text(max_size=60))
def test_property_never_raises_anything_but_invalid_input(text):
    try:
        spec = parse_domain_xml(text)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
    else:
        uuidlib.UUID(spec.uuid)
