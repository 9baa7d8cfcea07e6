"""Cluster state records and layout (pvc.schema), and store.effective_daemon_state."""

from __future__ import annotations

import json
import posixpath

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pvc.schema as schema_mod
from pvc.schema import (
    LAYOUT, NODE_DAEMON_STATES, SCHEMA_VERSION, SELECTORS, VM_STATES, Domain, Keepalive, NodeInfo, Paths,
)
from pvc.store import effective_daemon_state

text = st.text(max_size=30)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)

domains = st.builds(
    Domain,
    uuid=st.uuids().map(str),
    name=text,
    state=st.sampled_from(VM_STATES) | text,
    node=text,
    previous_node=text,
    failed_reason=text,
    target_node=text,
    libvirt_state=text,
    memory_mib=int64,
    vcpus=int64,
    node_limit=st.lists(text, max_size=5),
    selector=st.sampled_from(("", *SELECTORS)),
    autostart=st.booleans(),
    migration_method=st.sampled_from(("", "live", "shutdown")),
    console_log_file=text,
)
node_infos = st.builds(
    NodeInfo, name=text, daemon_mode=st.sampled_from(("hypervisor", "coordinator")), libvirt_uri=text,
    migration_uri=text, migration_address=text, console_log_directory=text, pvc_version=text,
    cpu_count=int64, arch=text, kernel=text,
)
keepalives = st.builds(
    Keepalive, time=finite, memory_total_mib=int64, memory_used_mib=int64, memory_free_mib=int64,
    memory_allocated_mib=int64, vcpus_total=int64, vcpus_allocated=int64, load=finite,
    domains_count=int64, running_domains=st.lists(text, max_size=5),
)


@given(domains)
def test_domain_roundtrip(d):
    assert Domain.decode(d.encode()) == d


@given(node_infos)
def test_node_info_roundtrip(n):
    assert NodeInfo.decode(n.encode()) == n


@given(keepalives)
def test_keepalive_roundtrip(k):
    assert Keepalive.decode(k.encode()) == k


def _strategy_for(tp):
    if tp is str:
        return text
    if tp is bool:
        return st.booleans()
    if tp is int:
        return int64
    if tp is float:
        return finite
    args = getattr(tp, "__args__", ())
    if type(None) in args and len(args) == 2:  # Optional[X]
        return st.none() | _strategy_for(next(a for a in args if a is not type(None)))
    origin = getattr(tp, "__origin__", None)
    if origin is list:
        return st.lists(_strategy_for(tp.__args__[0]), max_size=4)
    if origin is dict:  # an audit entry's arguments: JSON scalars by name
        return st.dictionaries(text, text | int64 | st.booleans(), max_size=4)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct_strategy(tp)
    raise AssertionError(f"no strategy for field type {tp!r}; extend the test")


def _struct_strategy(cls):
    return st.fixed_dictionaries(
        {f.name: _strategy_for(f.type) for f in msgspec.structs.fields(cls)}
    ).map(lambda kw: cls(**kw))


ALL_RECORDS = sorted(
    (o for o in vars(schema_mod).values()
     if isinstance(o, type) and issubclass(o, schema_mod.Record) and o is not schema_mod.Record),
    key=lambda c: c.__name__,
)


def test_known_records_are_discovered():
    assert {Domain, NodeInfo, Keepalive} <= set(ALL_RECORDS)


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
def test_every_record_roundtrips(cls):
    @given(_struct_strategy(cls))
    def check(record):
        data = record.encode()
        again = cls.decode(data)
        assert again == record
        assert again.encode() == data

    check()


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda c: c.__name__)
def test_every_record_decodes_with_only_required_fields(cls):
    required = {f.name: "x" if f.type is str else 0 for f in msgspec.structs.fields(cls) if f.required}
    record = cls.decode(json.dumps(required).encode())
    for f in msgspec.structs.fields(cls):
        if not f.required:
            expected = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
            assert getattr(record, f.name) == expected


@pytest.mark.parametrize("cls,minimal", [
    (Domain, {"uuid": "u", "name": "n"}),
    (NodeInfo, {"name": "n"}),
    (Keepalive, {}),
])
def test_encoding_is_compact_json_with_every_field(cls, minimal):
    data = cls(**minimal).encode()
    assert isinstance(data, bytes)
    assert b" " not in data and b"\n" not in data
    decoded = json.loads(data)
    # defaults are written too (omit_defaults=False), so other readers see every field
    assert set(decoded) == set(cls.__struct_fields__)


def test_domain_defaults():
    d = Domain.decode(b'{"uuid":"u","name":"n"}')
    assert d.state == "stop" and d.libvirt_state == "shutoff"
    assert d.node == "" and d.node_limit == [] and d.autostart is False
    assert d.memory_mib == 0 and d.vcpus == 0


def test_default_lists_are_not_shared():
    a, b = Domain(uuid="a", name="a"), Domain(uuid="b", name="b")
    a.node_limit.append("hv1")
    assert b.node_limit == []
    k1, k2 = Keepalive(), Keepalive()
    k1.running_domains.append("x")
    assert k2.running_domains == []


def test_decode_ignores_unknown_fields_for_forward_compatibility():
    d = Domain.decode(b'{"uuid":"u","name":"n","state":"start","added_in_v2":{"x":1}}')
    assert d.state == "start"
    assert Keepalive.decode(b'{"load":1.5,"future":[1,2]}').load == 1.5


def test_decode_requires_identity_fields():
    with pytest.raises(msgspec.ValidationError, match="uuid"):
        Domain.decode(b'{"name":"n"}')
    with pytest.raises(msgspec.ValidationError, match="name"):
        Domain.decode(b'{"uuid":"u"}')
    with pytest.raises(msgspec.ValidationError, match="name"):
        NodeInfo.decode(b"{}")


@pytest.mark.parametrize("data,field", [
    (b'{"uuid":"u","name":"n","memory_mib":"512"}', "memory_mib"),
    (b'{"uuid":"u","name":"n","autostart":"yes"}', "autostart"),
    (b'{"uuid":"u","name":"n","node_limit":"hv1"}', "node_limit"),
    (b'{"uuid":"u","name":1}', "name"),
])
def test_decode_rejects_wrong_types(data, field):
    with pytest.raises(msgspec.ValidationError, match=field):
        Domain.decode(data)


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xff"])
def test_decode_rejects_malformed(data):
    with pytest.raises(msgspec.DecodeError):
        Domain.decode(data)


def test_keepalive_int_fields_accept_json_ints_and_load_accepts_int():
    k = Keepalive.decode(b'{"load":2,"time":1}')
    assert k.load == 2.0 and isinstance(k.load, float)


def test_decode_returns_the_right_type():
    assert type(Domain.decode(Domain(uuid="u", name="n").encode())) is Domain
    assert type(NodeInfo.decode(NodeInfo(name="n").encode())) is NodeInfo
    assert type(Keepalive.decode(Keepalive().encode())) is Keepalive


# -- layout ---------------------------------------------------------------------------------------


def test_paths():
    assert Paths.node("hv1") == "/nodes/hv1"
    assert Paths.node_key("hv1", "keepalive") == "/nodes/hv1/keepalive"
    assert Paths.domain("abc") == "/domains/abc"
    assert Paths.domain_xml("abc") == "/domains/abc/xml"
    assert Paths.domain_console_log("abc") == "/domains/abc/console_log"
    assert Paths.domain_name("web1") == "/domain_names/web1"


def test_layout_parents_come_before_children():
    seen = {"/"}
    for path in LAYOUT:
        assert path.startswith("/") and not path.endswith("/")
        assert posixpath.dirname(path) in seen, path
        seen.add(path)


def test_layout_initial_values():
    assert LAYOUT[Paths.schema_version] == str(SCHEMA_VERSION).encode()
    assert LAYOUT[Paths.maintenance] == b"false"
    assert LAYOUT[Paths.migration_selector].decode() in SELECTORS
    for path in (Paths.nodes, Paths.domains, Paths.domain_names, Paths.networks, Paths.flush_lock):
        assert path in LAYOUT


def test_state_tuples_are_unique():
    for states in (VM_STATES, NODE_DAEMON_STATES, SELECTORS):
        assert len(set(states)) == len(states)


# -- effective daemon state -----------------------------------------------------------------------


@pytest.mark.parametrize("stored,alive,expected", [
    ("run", True, "run"),
    ("init", True, "init"),
    ("shutdown", True, "shutdown"),
    ("stop", True, "stop"),
    ("dead", True, "dead"),
    ("fenced", True, "fenced"),
    # claims to be up but its session is gone -> dead
    ("run", False, "dead"),
    ("init", False, "dead"),
    ("shutdown", False, "dead"),
    # a clean stop or a fence is kept as is
    ("stop", False, "stop"),
    ("fenced", False, "fenced"),
    ("dead", False, "dead"),
    # never written
    ("", True, "dead"),
    ("", False, "dead"),
])
def test_effective_daemon_state(stored, alive, expected):
    assert effective_daemon_state(stored, alive) == expected


@given(stored=st.sampled_from(NODE_DAEMON_STATES) | st.just(""), alive=st.booleans())
def test_effective_daemon_state_is_a_known_state(stored, alive):
    result = effective_daemon_state(stored, alive)
    assert result in NODE_DAEMON_STATES
    if alive and stored:
        assert result == stored
    if result == "run":
        assert alive
