"""The operations' declarations: what the REST API and the remote CLI backend rely on (pure)."""

import typing

import msgspec
import pytest

from pvc.ops import registry
from pvc.ops.cluster import ClusterStatus, Fencing, RunningTwice, typed_settings
from pvc.ops.node import NodeInfo
from pvc.ops.vm import Migrated, VmChange
from pvc.schema import Domain, FenceState
from pvc.store import NodeView

OPERATIONS = registry.load_all()


def test_every_operation_has_a_unique_route_with_its_placeholders_in_its_params():
    routes = [(op.method, op.path) for op in OPERATIONS.values()]
    assert len(routes) == len(set(routes))
    for op in OPERATIONS.values():
        fields = {f.name for f in msgspec.structs.fields(op.params)}
        missing = [p for p in op.path.replace("}", "{").split("{")[1::2] if p not in fields]
        assert not missing, f"{op.name}: {op.path} names {missing}, not fields of {op.params.__name__}"


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_params_and_results_have_a_json_schema(name):
    op = OPERATIONS[name]
    assert op.result is not typing.Any, f"{name} declares no result type"
    msgspec.json.schema(op.params)
    msgspec.json.schema(op.result)  # an unsupported type (a plain class) fails here


def roundtrip(value, tp):
    return msgspec.json.decode(msgspec.json.encode(value), type=tp)


def test_results_decode_into_their_own_types():
    dom = Domain(uuid="u1", name="vm1", memory_mib=512, vcpus=1, node="hv1", state="migrate", target_node="hv2")
    assert roundtrip(Migrated(vm=dom, version=7, source="hv1", how="pending"), Migrated).vm == dom
    assert roundtrip(VmChange(vm=dom, version=3), VmChange).version == 3
    fence = FenceState(status="failed", attempts=2, message="ipmi: timeout")
    status = ClusterStatus(primary_node="hv1", maintenance=True, settings=typed_settings(
        {"migration_selector": "mem", "maintenance": "true"}), nodes=1, nodes_by_daemon_state={"run": 1},
        nodes_by_domain_state={"ready": 1}, fencing=[Fencing(node="hv3", **msgspec.structs.asdict(fence))],
        vms=1, vms_by_state={"start": 1}, vms_failed=[],
        vms_running_twice=[RunningTwice(vm="vm1", node="hv1", also_on=["hv2"])])
    back = roundtrip(status, ClusterStatus)
    assert back == status and back.settings["maintenance"] is True and back.fencing[0].attempts == 2
    view = NodeView(**{f.name: f.default if f.default is not msgspec.NODEFAULT else
                       (0 if f.type in (int, float) else [] if f.type == list[str] else "x")
                       for f in msgspec.structs.fields(NodeView)})
    info = NodeInfo(**msgspec.structs.asdict(view), fence=fence)
    assert roundtrip(info, NodeInfo).fence == fence
    assert msgspec.json.decode(msgspec.json.encode(info))["fence"]["status"] == "failed"


def test_typed_settings_show_maintenance_as_a_boolean():
    assert typed_settings({"migration_selector": "load", "maintenance": "false"}) == \
        {"migration_selector": "load", "maintenance": False}
