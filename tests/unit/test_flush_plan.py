"""Planning a flush and a ready (pure: pvc.flush_plan)."""

from __future__ import annotations

from collections import Counter

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc.flush_plan import (
    Move,
    committed,
    dispatch,
    in_flight,
    plan_flush,
    plan_ready,
    unsettled,
)
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
    assert plan_ready([vm("a", "disable", node_="hv2", previous_node=ME)], ME, [node(ME)]) == []


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
    assert [(m.name, m.target, m.live) for m in plan_ready(doms, ME, [node(ME), node('hv2'), node('hv3')])] == [("a", ME, True), ("c", ME, False)]


@given(states=st.lists(st.sampled_from(VM_STATES), min_size=1, max_size=12),
       nodes=st.integers(min_value=1, max_value=4))
def test_property_every_vm_of_the_node_but_disabled_ones_is_planned_once(states, nodes):
    doms = [vm(f"v{i:02d}", s, mem=256) for i, s in enumerate(states)]
    others = [node(f"hv{i + 2}") for i in range(nodes)]
    moves = plan_flush(doms, ME, [node(ME), *others], "mem")
    assert sorted(m.name for m in moves) == sorted(d.name for d in doms if d.state != "disable")
    assert all(m.target != ME for m in moves)
    assert [m.name for m in moves] == sorted(m.name for m in moves)  # deterministic order


# -- memory committed, not only reported -------------------------------------------------------------

def test_vms_on_their_way_count_against_their_target_until_its_keepalive_lists_them():
    coming = vm("x", "migrate", node_="hv3", mem=3000, target_node="hv2")
    starting = vm("y", "start", node_="hv2", mem=500)
    pool = committed([node("hv2")], [coming, starting])
    assert pool["hv2"].memory_allocated_mib == 3500
    listed = msgspec.structs.replace(node("hv2", allocated=3500), running=frozenset({"u-x", "u-y"}))
    assert committed([listed], [coming, starting])["hv2"].memory_allocated_mib == 3500  # not twice


def test_a_flush_does_not_fill_room_a_migration_in_flight_will_take():
    coming = vm("x", "migrate", node_="hv3", mem=3000, target_node="hv2")
    moves = plan_flush([vm("a", mem=2000), coming], ME, [node(ME), node("hv2"), node("hv3", allocated=3000)], "mem")
    (a,) = moves
    assert a.target == "" and "not enough free memory" in a.reason


def test_the_plan_says_why_each_target_was_chosen():
    (a,) = plan_flush([vm("a", mem=1000, selector="vms")], ME, [node(ME), node("hv2", allocated=1024)], "mem")
    assert (a.target, a.selector, a.available_mib, a.memory_mib, a.source) == ("hv2", "vms", 3072, 1000, ME)


def test_ready_brings_home_only_what_fits():
    doms = [vm("a", node_="hv2", previous_node=ME, mem=3000), vm("b", node_="hv2", previous_node=ME, mem=3000)]
    a, b = plan_ready(doms, ME, [node(ME), node("hv2")])
    assert a.target == ME and b.target == "" and b.reason.startswith("it stays on hv2: node hv1 has not enough")


# -- pacing ----------------------------------------------------------------------------------------------

def started(step):
    return [m.name for m in step.start]


def test_at_most_limit_migrations_start_and_hand_overs_take_no_slot():
    doms = [vm(f"v{i}", mem=100) for i in range(5)] + [vm("cold", "stop")]
    nodes = [node(ME), node("hv2"), node("hv3")]
    plan = plan_flush(doms, ME, nodes, "mem")
    step = dispatch(plan, active=[], domains=[], nodes=nodes, limit=2)
    assert started(step) == ["cold", "v0", "v1"] and len(step.waiting) == 3
    # Two in flight: nothing more starts until one ends.
    assert dispatch(step.waiting, active=step.start, domains=[], nodes=nodes, limit=2).start == []
    assert started(dispatch(step.waiting, active=step.start[:2], domains=[], nodes=nodes, limit=2)) == ["v2"]


def test_migrations_of_others_take_slots_cluster_wide():
    nodes = [node(ME), node("hv2"), node("hv3"), node("hv4")]
    plan = plan_flush([vm("a", mem=100), vm("b", mem=100)], ME, nodes, "vms")
    assert [m.target for m in plan] == ["hv2", "hv3"]
    elsewhere = vm("x", "migrate", node_="hv4", target_node="hv2", mem=100)
    # Limit 1: the other migration fills the cluster.
    assert dispatch(plan, active=[], domains=[elsewhere], nodes=nodes, limit=1).start == []
    # Limit 2: room for one more in the cluster: a goes, b waits.
    step = dispatch(plan, active=[], domains=[elsewhere], nodes=nodes, limit=2)
    assert started(step) == ["a"] and [m.name for m in step.waiting] == ["b"]
    # One of ours in flight counts as well.
    ours = Move("u-c", "c", "hv3", True, source=ME, memory_mib=100)
    assert dispatch(plan, active=[ours], domains=[elsewhere], nodes=nodes, limit=2).start == []


def test_a_target_that_no_longer_fits_is_replaced_and_a_vm_with_nowhere_left_is_unmovable():
    nodes = [node(ME), node("hv2"), node("hv3")]
    plan = plan_flush([vm("a", mem=1000), vm("b", mem=3000)], ME, nodes, "mem")
    assert [m.target for m in plan] == ["hv2", "hv3"]
    now = [node(ME), node("hv2", domain_state="flush"), node("hv3")]  # hv2 is being flushed meanwhile
    step = dispatch(plan, active=[], domains=[], nodes=now, limit=4)
    # b keeps its planned room on hv3; a, re-placed, gets what is left there.
    assert [(m.name, m.target) for m in step.start] == [("a", "hv3"), ("b", "hv3")]
    full = [node(ME), node("hv2", domain_state="flush"), node("hv3", allocated=3000)]
    step = dispatch(plan, active=[], domains=[], nodes=full, limit=4)
    assert [m.name for m in step.unmovable] == ["b"] and [(m.name, m.target) for m in step.start] == [("a", "hv3")]
    assert "node hv3 has not enough free memory" in step.unmovable[0].reason


def test_ready_checks_room_at_home_and_limits_per_source():
    doms = [vm(f"v{i}", node_="hv2", previous_node=ME, mem=100) for i in range(3)]
    nodes = [node(ME, domain_state="unflush"), node("hv2")]
    plan = plan_ready(doms, ME, nodes)
    step = dispatch(plan, active=[], domains=[], nodes=nodes, limit=2, home=ME)
    assert started(step) == ["v0", "v1"] and [m.name for m in step.waiting] == ["v2"]
    crowded = [node(ME, domain_state="unflush", allocated=4000), node("hv2")]
    step = dispatch(plan, active=[], domains=[], nodes=crowded, limit=2, home=ME)
    assert len(step.unmovable) == 3 and step.unmovable[0].reason.startswith("it stays on hv2")


@settings(max_examples=100, deadline=None)
@given(data=st.data(), limit=st.integers(min_value=1, max_value=5), n_nodes=st.integers(min_value=1, max_value=4),
       n_vms=st.integers(min_value=1, max_value=14), n_others=st.integers(min_value=0, max_value=4))
def test_property_paced_flush_never_overfills_a_node_nor_exceeds_the_limits(data, limit, n_nodes, n_vms, n_others):
    """A flush run step by step against a cluster whose keepalives lag and where other migrations
    land meanwhile: no node ever holds (running plus on its way) more than its memory, never more
    than ``limit`` migrations at once in all, per source or per target, and every VM ends moved
    or named unmovable (nothing is stuck)."""
    names = [f"hv{i + 2}" for i in range(n_nodes)]
    total = {n: 4096 for n in names}
    running = {n: {} for n in [ME, *names]}  # node -> uuid -> memory: libvirt's truth
    records = {}
    for i in range(n_vms):
        d = vm(f"v{i:02d}", data.draw(st.sampled_from(["start", "start", "stop"])), mem=data.draw(st.sampled_from([256, 1024, 2048, 3072])))
        records[d.uuid] = d
        if d.state == "start":
            running[ME][d.uuid] = d.memory_mib
    for i in range(n_others):  # other migrations in flight to the targets, each fitting
        target = data.draw(st.sampled_from(names))
        d = vm(f"o{i}", "migrate", node_="elsewhere", mem=512, target_node=target)
        if sum(running[target].values()) + 512 + sum(o.memory_mib for o in records.values() if o.target_node == target) <= 4096:
            records[d.uuid] = d
    keepalive = {n: dict(r) for n, r in running.items()}
    flushed: set[str] = set()  # targets whose own flush was requested meanwhile: not ready any more

    def candidates():
        return [Candidate(name=n, daemon_state="run", domain_state="flush" if n in (ME, *flushed) else "ready",
                          memory_total_mib=total.get(n, 4096), memory_free_mib=0,
                          memory_allocated_mib=sum(keepalive[n].values()), vcpus_allocated=0, load=0.0,
                          domains_count=len(keepalive[n]), running=frozenset(keepalive[n])) for n in [ME, *names]]

    plan = plan_flush(list(records.values()), ME, candidates(), "mem")
    pending, active, landed, done = plan, [], [], set()
    others = {u: d for u, d in records.items() if u.startswith("u-o")}
    for _ in range(3 * n_vms + 2):
        if not pending and not active:
            break
        step = dispatch(pending, active=active, landed=landed, domains=list(others.values()), nodes=candidates(),
                        limit=limit)
        pending = step.waiting
        done |= {m.uuid for m in step.unmovable}
        for m in step.start:
            if m.live:
                active.append(m)
            else:
                done.add(m.uuid)
        if any(m.live for m in step.start):  # others alone may exceed it: then nothing of ours starts
            flights = in_flight(others.values(), active)
            assert len(flights) <= limit
            assert max(Counter(t.source for t in flights).values(), default=0) <= limit
            assert max(Counter(t.target for t in flights).values(), default=0) <= limit
        for n in names:  # libvirt's truth plus everything on its way there
            coming = sum(m.memory_mib for m in active if m.target == n) + sum(
                o.memory_mib for o in others.values() if o.state == "migrate" and o.target_node == n)
            assert sum(running[n].values()) + coming <= total[n], n
        # Some moves of ours (one at least) and some of others land; some keepalives catch up.
        for m in data.draw(st.lists(st.sampled_from(active), unique=True, min_size=1) if active else st.just([])):
            active.remove(m)
            del running[ME][m.uuid]
            running[m.target][m.uuid] = m.memory_mib
            landed.append(m)
            done.add(m.uuid)
        for u in data.draw(st.lists(st.sampled_from(sorted(others)), unique=True) if others else st.just([])):
            o = others[u]
            if o.state == "migrate":
                running[o.target_node][u] = o.memory_mib
                others[u] = msgspec.structs.replace(o, state="start", node=o.target_node, target_node="")
        for n in data.draw(st.lists(st.sampled_from([ME, *names]), unique=True)):
            keepalive[n] = dict(running[n])
        if data.draw(st.integers(0, 3)) == 0:
            flushed.add(data.draw(st.sampled_from(names)))
        nodes_now = candidates()
        others = {u: d for u, d in others.items() if u in unsettled(others.values(), nodes_now)}
        landed = [m for m in landed if m.uuid not in keepalive[m.target]]
        if not active and pending:  # nothing of ours in flight: time passes, everything else lands
            for u, o in list(others.items()):
                if o.state == "migrate":
                    running[o.target_node][u] = o.memory_mib
                others.pop(u)
            for n in [ME, *names]:
                keepalive[n] = dict(running[n])
            landed = []
    assert not pending and not active, "the flush got stuck"
    assert done == {m.uuid for m in plan}


def test_a_moved_vm_counts_on_its_target_until_the_keepalive_lists_it():
    nodes = [node(ME), node("hv2"), node("hv3")]
    a, b = plan_flush([vm("a", mem=3000), vm("b", mem=3000)], ME, nodes, "mem")
    assert (a.target, b.target) == ("hv2", "hv3")
    now = [node(ME), node("hv2"), node("hv3", domain_state="flush")]  # a is on hv2, its keepalive is behind
    step = dispatch([b], active=[], landed=[a], domains=[], nodes=now, limit=2)
    assert step.start == [] and "node hv2 has not enough free memory" in step.unmovable[0].reason
    listed = [node(ME), msgspec.structs.replace(node("hv2", allocated=3000), running=frozenset({"u-a"})),
              node("hv3", domain_state="flush")]
    step = dispatch([b], active=[], landed=[a], domains=[], nodes=listed, limit=2)
    assert step.start == [] and len(step.unmovable) == 1  # counted once, not twice: still no room
