"""Target node selection (pvc.placement): pure, exhaustive, fast."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvc.errors import Conflict, InvalidInput, NotFound
from pvc.placement import Candidate, check_selector, choose_node, refusal
from pvc.schema import NODE_DAEMON_STATES, NODE_DOMAIN_STATES, SELECTORS


def node(name: str, *, daemon_state: str = "run", domain_state: str = "ready", total: int = 16384,
         free: int = 8192, allocated: int = 0, vcpus: int = 0, load: float = 0.0, vms: int = 0) -> Candidate:
    return Candidate(
        name=name, daemon_state=daemon_state, domain_state=domain_state, memory_total_mib=total,
        memory_free_mib=free, memory_allocated_mib=allocated, vcpus_allocated=vcpus, load=load,
        domains_count=vms,
    )


# One cluster where every selector has a different, unique winner.
#   mem     -> hv-mem      (most total - allocated)
#   memfree -> hv-memfree  (most free right now, but heavily allocated)
#   load    -> hv-load     (lowest load)
#   vcpus   -> hv-vcpus    (fewest vCPUs allocated)
#   vms     -> hv-vms      (fewest VMs)
CLUSTER = [
    node("hv-vms", total=16384, free=1000, allocated=12000, vcpus=10, load=5.0, vms=0),
    node("hv-mem", total=65536, free=2000, allocated=1000, vcpus=20, load=4.0, vms=10),
    node("hv-memfree", total=65536, free=60000, allocated=60000, vcpus=30, load=3.0, vms=20),
    node("hv-load", total=16384, free=3000, allocated=8000, vcpus=40, load=0.1, vms=30),
    node("hv-vcpus", total=16384, free=4000, allocated=9000, vcpus=1, load=2.0, vms=40),
]


@pytest.mark.parametrize("selector", SELECTORS)
def test_each_selector_picks_its_best_node(selector):
    assert choose_node(CLUSTER, selector=selector, memory_mib=64) == f"hv-{selector}"


@pytest.mark.parametrize("selector", SELECTORS)
def test_answer_does_not_depend_on_list_order(selector):
    rng = random.Random(4)
    for _ in range(20):
        shuffled = CLUSTER[:]
        rng.shuffle(shuffled)
        assert choose_node(shuffled, selector=selector, memory_mib=64) == f"hv-{selector}"


def test_mem_uses_total_minus_allocated_not_free():
    a = node("a", total=32768, allocated=30000, free=30000)   # 2768 available, lots free
    b = node("b", total=32768, allocated=10000, free=100)     # 22768 available, little free
    assert choose_node([a, b], selector="mem", memory_mib=64) == "b"
    assert choose_node([a, b], selector="memfree", memory_mib=64) == "a"


def test_load_is_compared_as_float():
    nodes = [node("a", load=0.35), node("b", load=0.3), node("c", load=0.31)]
    assert choose_node(nodes, selector="load", memory_mib=1) == "b"


@pytest.mark.parametrize("selector", SELECTORS)
def test_tie_broken_by_name(selector):
    # Identical scores; list order deliberately not alphabetical.
    nodes = [node(n, total=8192, free=4096, allocated=1024, vcpus=4, load=1.0, vms=3)
             for n in ("hv-c1", "hv-a3", "hv-b2")]
    assert choose_node(nodes, selector=selector, memory_mib=64) == "hv-a3"


def test_tie_only_among_best_scores():
    # "a" sorts first but has a worse score; tie between "c" and "b" goes to "b".
    nodes = [node("c", vms=1), node("a", vms=5), node("b", vms=1)]
    assert choose_node(nodes, selector="vms", memory_mib=64) == "b"


@pytest.mark.parametrize("selector", SELECTORS)
def test_exclude_current_node(selector):
    best = f"hv-{selector}"
    chosen = choose_node(CLUSTER, selector=selector, memory_mib=64, exclude=best)
    assert chosen != best
    assert chosen in {c.name for c in CLUSTER}


def test_exclude_gives_second_best():
    nodes = [node("a", vms=1), node("b", vms=2), node("c", vms=3)]
    assert choose_node(nodes, selector="vms", memory_mib=1, exclude="a") == "b"


def test_exclude_only_node_is_conflict():
    with pytest.raises(Conflict, match="no eligible target node"):
        choose_node([node("a")], selector="mem", memory_mib=1, exclude="a")


def test_node_limit_honoured():
    nodes = [node("a", vms=0), node("b", vms=5), node("c", vms=9)]
    assert choose_node(nodes, selector="vms", memory_mib=1, node_limit=["b", "c"]) == "b"
    assert choose_node(nodes, selector="vms", memory_mib=1, node_limit=["c"]) == "c"


@pytest.mark.parametrize("limit", [None, []])
def test_empty_node_limit_means_any_node(limit):
    nodes = [node("a", vms=3), node("b", vms=0)]
    assert choose_node(nodes, selector="vms", memory_mib=1, node_limit=limit) == "b"


def test_node_limit_and_exclude_combine():
    nodes = [node("a", vms=0), node("b", vms=1), node("c", vms=2)]
    assert choose_node(nodes, selector="vms", memory_mib=1, node_limit=["b", "c"], exclude="b") == "c"


def test_node_limit_with_no_eligible_member_names_the_limit():
    nodes = [node("a"), node("b", daemon_state="dead"), node("c", domain_state="flushed")]
    with pytest.raises(Conflict) as exc:
        choose_node(nodes, selector="mem", memory_mib=1, node_limit=["b", "c"])
    assert "among b, c" in str(exc.value)


def test_node_limit_naming_unknown_nodes_only_is_conflict():
    with pytest.raises(Conflict, match="among ghost"):
        choose_node([node("a")], selector="mem", memory_mib=1, node_limit=["ghost"])


@pytest.mark.parametrize("state", [s for s in NODE_DAEMON_STATES if s != "run"])
def test_node_not_running_is_never_chosen(state):
    nodes = [node("a", daemon_state=state, vms=0), node("b", vms=99)]
    assert choose_node(nodes, selector="vms", memory_mib=1) == "b"


@pytest.mark.parametrize("state", [s for s in NODE_DOMAIN_STATES if s != "ready"])
def test_node_not_ready_is_never_chosen(state):
    nodes = [node("a", domain_state=state, vms=0), node("b", vms=99)]
    assert choose_node(nodes, selector="vms", memory_mib=1) == "b"


def test_node_without_enough_memory_is_never_chosen():
    nodes = [node("a", total=4096, allocated=3000, vms=0), node("b", total=4096, allocated=0, vms=9)]
    assert choose_node(nodes, selector="vms", memory_mib=1097) == "b"


def test_memory_boundary_exactly_enough_is_eligible():
    nodes = [node("a", total=4096, allocated=3000)]
    assert choose_node(nodes, selector="mem", memory_mib=1096) == "a"
    with pytest.raises(Conflict):
        choose_node(nodes, selector="mem", memory_mib=1097)


def test_no_eligible_node_conflict_mentions_memory():
    nodes = [node("a", daemon_state="dead"), node("b", domain_state="flush"), node("c", total=100)]
    with pytest.raises(Conflict) as exc:
        choose_node(nodes, selector="mem", memory_mib=512)
    msg = str(exc.value)
    assert "no eligible target node" in msg
    assert "512 MiB" in msg
    assert "among" not in msg
    assert "\n" not in msg


def test_empty_cluster_is_conflict():
    with pytest.raises(Conflict):
        choose_node([], selector="mem", memory_mib=1)


# -- selectors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("selector", SELECTORS)
def test_check_selector_accepts_known(selector):
    assert check_selector(selector) == selector


@pytest.mark.parametrize("bad", ["", "MEM", "memory", "random", " mem", "load "])
def test_unknown_selector_invalid_input(bad):
    with pytest.raises(InvalidInput) as exc:
        check_selector(bad)
    msg = str(exc.value)
    assert repr(bad) in msg
    for s in SELECTORS:
        assert s in msg
    with pytest.raises(InvalidInput):
        choose_node(CLUSTER, selector=bad, memory_mib=1)


def test_unknown_selector_reported_before_lack_of_nodes():
    with pytest.raises(InvalidInput):
        choose_node([], selector="bogus", memory_mib=1)


# -- explicit target ------------------------------------------------------------------------------


def test_target_is_returned_even_if_not_best():
    assert choose_node(CLUSTER, selector="vms", memory_mib=64, target="hv-load") == "hv-load"


def test_target_unknown_is_not_found():
    with pytest.raises(NotFound) as exc:
        choose_node(CLUSTER, selector="mem", memory_mib=64, target="ghost")
    assert "'ghost'" in str(exc.value)


def test_target_same_as_current_is_conflict():
    with pytest.raises(Conflict) as exc:
        choose_node(CLUSTER, selector="mem", memory_mib=64, target="hv-mem", exclude="hv-mem")
    assert "hv-mem" in str(exc.value)
    assert "already" in str(exc.value)


@pytest.mark.parametrize("state", [s for s in NODE_DAEMON_STATES if s != "run"])
def test_target_not_running_is_conflict_naming_node(state):
    nodes = [node("a"), node("b", daemon_state=state)]
    with pytest.raises(Conflict) as exc:
        choose_node(nodes, selector="mem", memory_mib=1, target="b")
    msg = str(exc.value)
    assert "node b" in msg and "not running" in msg and state in msg


@pytest.mark.parametrize("state", [s for s in NODE_DOMAIN_STATES if s != "ready"])
def test_target_not_ready_is_conflict_naming_node(state):
    nodes = [node("a"), node("b", domain_state=state)]
    with pytest.raises(Conflict) as exc:
        choose_node(nodes, selector="mem", memory_mib=1, target="b")
    msg = str(exc.value)
    assert "node b" in msg and "not ready" in msg and state in msg


def test_target_without_memory_is_conflict_naming_node_and_sizes():
    nodes = [node("a"), node("b", total=2048, allocated=1024)]
    with pytest.raises(Conflict) as exc:
        choose_node(nodes, selector="mem", memory_mib=2000, target="b")
    msg = str(exc.value)
    assert "node b" in msg and "not enough free memory" in msg
    assert "1024 MiB available" in msg and "2000 MiB needed" in msg


def test_target_not_running_reported_before_not_ready_and_memory():
    c = node("b", daemon_state="dead", domain_state="flushed", total=1)
    assert "not running" in refusal(c, 10)
    c = node("b", domain_state="flushed", total=1)
    assert "not ready" in refusal(c, 10)


def test_refusal_empty_for_eligible_node():
    assert refusal(node("a", total=100, allocated=50), 50) == ""


def test_memory_available_property():
    assert node("a", total=1000, allocated=300).memory_available_mib == 700


# -- properties -----------------------------------------------------------------------------------

# An oracle written independently of pvc.placement: lower is better.
ORACLE_SCORE = {
    "mem": lambda c: -(c.memory_total_mib - c.memory_allocated_mib),
    "memfree": lambda c: -c.memory_free_mib,
    "load": lambda c: c.load,
    "vcpus": lambda c: c.vcpus_allocated,
    "vms": lambda c: c.domains_count,
}


def oracle_eligible(c: Candidate, memory_mib: int, exclude: str, limit: list[str] | None) -> bool:
    return (
        c.name != exclude
        and (not limit or c.name in limit)
        and c.daemon_state == "run"
        and c.domain_state == "ready"
        and c.memory_total_mib - c.memory_allocated_mib >= memory_mib
    )


names = st.sampled_from([f"n{i}" for i in range(6)] + ["alpha", "beta", "Zed", "zed", "a9", "b1", "c0"])
candidates = st.lists(
    st.builds(
        node,
        names,
        daemon_state=st.sampled_from(("run", "run", "run", "init", "dead", "stop")),
        domain_state=st.sampled_from(("ready", "ready", "ready", "flush", "flushed")),
        total=st.integers(0, 4096),
        free=st.integers(0, 4096),
        allocated=st.integers(0, 4096),
        vcpus=st.integers(0, 8),
        load=st.sampled_from((0.0, 0.5, 1.0, 1.5, 2.0)),
        vms=st.integers(0, 4),
    ),
    max_size=8,
    unique_by=lambda c: c.name,
)


@settings(max_examples=400, deadline=None)
@given(
    nodes=candidates,
    selector=st.sampled_from(SELECTORS),
    memory_mib=st.integers(0, 4096),
    data=st.data(),
)
def test_property_choice_is_eligible_and_optimal(nodes, selector, memory_mib, data):
    all_names = [c.name for c in nodes]
    exclude = data.draw(st.sampled_from(["", *all_names]) if all_names else st.just(""))
    limit = data.draw(st.none() | st.lists(st.sampled_from(all_names + ["ghost"]), unique=True))
    eligible = [c for c in nodes if oracle_eligible(c, memory_mib, exclude, limit)]
    if not eligible:
        with pytest.raises(Conflict):
            choose_node(nodes, selector=selector, memory_mib=memory_mib, exclude=exclude, node_limit=limit)
        return
    chosen = choose_node(nodes, selector=selector, memory_mib=memory_mib, exclude=exclude, node_limit=limit)
    by_name = {c.name: c for c in nodes}
    assert chosen in {c.name for c in eligible}
    score = ORACLE_SCORE[selector]
    best = score(by_name[chosen])
    assert not any(score(c) < best for c in eligible)
    # among equally good nodes, the first by name
    assert chosen == min(c.name for c in eligible if score(c) == best)
    # order of the input never changes the answer
    assert choose_node(list(reversed(nodes)), selector=selector, memory_mib=memory_mib,
                       exclude=exclude, node_limit=limit) == chosen


@settings(max_examples=200, deadline=None)
@given(nodes=candidates.filter(bool), memory_mib=st.integers(0, 4096), data=st.data())
def test_property_target_accepted_iff_refusal_empty(nodes, memory_mib, data):
    target = data.draw(st.sampled_from([c.name for c in nodes]))
    c = {c.name: c for c in nodes}[target]
    ok = oracle_eligible(c, memory_mib, "", None)
    assert (refusal(c, memory_mib) == "") == ok
    if ok:
        assert choose_node(nodes, selector="mem", memory_mib=memory_mib, target=target) == target
    else:
        with pytest.raises(Conflict) as exc:
            choose_node(nodes, selector="mem", memory_mib=memory_mib, target=target)
        assert f"node {target} " in str(exc.value)
