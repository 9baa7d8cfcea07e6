"""Planning a flush and a ready (pure: pvc.flush_plan)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvc.flush_plan import plan_flush, plan_ready
from pvc.placement import Candidate
from pvc.schema import VM_STATES, Domain

ME = "hv1"


def node(name: str, total: int = 4096, allocated: int = 0, state: str = "run", domain_state: str = "ready") -> Candidate:
    return Candidate(name=name, daemon_state=state, domain_state=domain_state, memory_total_mib=total,
                     memory_free_mib=total - allocated, memory_allocated_mib=allocated, vcpus_allocated=0,
                     load=0.0, domains_count=0)


def vm(name: str, state: str = "start", node_: str = ME, mem: int = 1024, **kw) -> Domain:
    return Domain(uuid=f"u-{name}", name=name, state=state, node=node_, memory_mib=mem, vcpus=1, **kw)


def test_running_vms_migrate_and_stopped_ones_are_handed_over():
    moves = plan_flush([vm("a"), vm("b", "stop"), vm("c", "fail")], ME, [node(ME), node("hv2")], "mem")
    assert [(m.name, m.target, m.live) for m in moves] == [("a", "hv2", True), ("b", "hv2", False), ("c", "hv2", False)]


def test_disabled_vms_stay_out_of_flushes_and_ready():
    assert plan_flush([vm("a", "disable")], ME, [node(ME), node("hv2")], "mem") == []
    assert plan_ready([vm("a", "disable", node_="hv2", previous_node=ME)], ME) == []


def test_planned_vms_count_against_their_targets_so_a_flush_spreads():
    vms = [vm(f"v{i}", mem=1024) for i in range(4)]
    moves = plan_flush(vms, ME, [node(ME), node("hv2"), node("hv3")], "mem")
    targets = [m.target for m in moves]
    assert targets.count("hv2") == 2 and targets.count("hv3") == 2


def test_no_node_that_is_not_ready_and_running_is_a_target():
    moves = plan_flush([vm("a")], ME, [node(ME), node("hv2", domain_state="flush"), node("hv3", state="dead")], "mem")
    assert moves[0].target == "" and moves[0].reason


def test_a_vm_too_big_for_every_node_has_nowhere_to_go():
    moves = plan_flush([vm("big", mem=8192)], ME, [node(ME), node("hv2", total=4096)], "mem")
    assert moves[0].target == "" and moves[0].live


def test_node_limit_is_honoured():
    moves = plan_flush([vm("a", node_limit=["hv3"])], ME, [node(ME), node("hv2"), node("hv3", allocated=2048)], "mem")
    assert moves[0].target == "hv3"


def test_ready_brings_home_only_vms_whose_previous_node_it_is():
    doms = [vm("a", node_="hv2", previous_node=ME), vm("b", node_="hv2", previous_node="hv3"),
            vm("c", "stop", node_="hv3", previous_node=ME), vm("d", previous_node=ME)]
    assert [(m.name, m.target, m.live) for m in plan_ready(doms, ME)] == [("a", ME, True), ("c", ME, False)]


@given(states=st.lists(st.sampled_from(VM_STATES), min_size=1, max_size=12),
       nodes=st.integers(min_value=1, max_value=4))
def test_property_every_vm_of_the_node_but_disabled_ones_is_planned_once(states, nodes):
    doms = [vm(f"v{i:02d}", s, mem=256) for i, s in enumerate(states)]
    others = [node(f"hv{i + 2}") for i in range(nodes)]
    moves = plan_flush(doms, ME, [node(ME), *others], "mem")
    assert sorted(m.name for m in moves) == sorted(d.name for d in doms if d.state != "disable")
    assert all(m.target != ME for m in moves)
    assert [m.name for m in moves] == sorted(m.name for m in moves)  # deterministic order
