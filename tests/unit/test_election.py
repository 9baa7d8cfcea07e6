"""The primary election's pure core: decide() case by case, and a model of a cluster of
coordinators driven through random interleavings (never two holders; always converges)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from pvc.election import (
    PRIMARY_HOLDING, Action, View, decide, handover_target, holder, order, parse_candidate, single_holder,
)


def view(**kw) -> View:
    base = dict(me="hv1", state="secondary", candidate="hv1-0000000001",
                children=("hv1-0000000001", "hv2-0000000002"), handover="", healthy=True)
    base.update(kw)
    return View(**base)


def test_candidate_names():
    assert parse_candidate("hv-1-0000000012").node == "hv-1"
    assert parse_candidate("hv1-0000000012").seq == "0000000012"
    assert parse_candidate("junk") is None
    assert parse_candidate("hv1-abc") is None
    assert [c.node for c in order(["b-0000000003", "a-0000000010", "junk", "c-0000000001"])] == ["c", "b", "a"]
    # Sequence numbers past 10 digits (ZooKeeper's counter overflows into more digits) sort numerically.
    assert holder(["a-2147483647", "b-0000000001"]) == "b"
    assert holder([]) == ""


def test_lowest_takes_over_and_others_wait():
    assert decide(view()) is Action.TAKEOVER
    assert decide(view(state="primary")) is Action.NOTHING
    assert decide(view(me="hv2", candidate="hv2-0000000002")) is Action.NOTHING


def test_enqueue_when_missing_and_relinquish_first_when_holding():
    assert decide(view(candidate=None)) is Action.ENQUEUE
    assert decide(view(candidate="hv1-0000000000")) is Action.ENQUEUE  # session ended, candidate gone
    assert decide(view(candidate=None, state="primary")) is Action.RELINQUISH
    assert decide(view(children=None)) is Action.NOTHING


def test_unhealthy_session_stops_duties_and_never_takes_over():
    assert decide(view(healthy=False, state="primary")) is Action.RELINQUISH
    assert decide(view(healthy=False, state="takeover")) is Action.RELINQUISH
    assert decide(view(healthy=False)) is Action.NOTHING


def test_not_lowest_any_more_relinquishes():
    v = view(state="primary", children=("hv2-0000000000", "hv1-0000000001"))
    assert decide(v) is Action.RELINQUISH


def test_ghost_candidates_of_this_node_are_dropped():
    v = view(children=("hv1-0000000000", "hv1-0000000001", "hv2-0000000002"))
    assert decide(v) is Action.DROP_GHOSTS


def test_handover():
    # The holder gives way to a running target: relinquish, then step back.
    assert decide(view(state="primary", handover="hv2")) is Action.RELINQUISH
    assert decide(view(state="secondary", handover="hv2")) is Action.STEP_BACK
    # The target, once lowest, takes over.
    v = view(me="hv2", candidate="hv2-0000000002", children=("hv2-0000000002", "hv1-0000000003"), handover="hv2")
    assert decide(v) is Action.TAKEOVER
    # A request for a node without a candidate is stale: the lowest keeps (or takes) the role.
    assert decide(view(handover="hv9")) is Action.TAKEOVER
    assert decide(view(state="primary", handover="hv9")) is Action.CLEAR_HANDOVER
    assert decide(view(state="primary", handover="hv1")) is Action.CLEAR_HANDOVER


def test_stopping():
    assert decide(view(stopping=True, state="primary")) is Action.RELINQUISH
    assert decide(view(stopping=True)) is Action.STEP_BACK
    assert decide(view(stopping=True, candidate=None)) is Action.NOTHING


def test_handover_target_and_single_holder():
    assert handover_target(["hv1-0000000001", "hv3-0000000002", "hv2-0000000003"], "hv1") == "hv3"
    assert handover_target(["hv1-0000000001"], "hv1") == ""
    assert single_holder({"a": "primary", "b": "secondary", "c": "relinquish"})
    assert not single_holder({"a": "primary", "b": "takeover"})


# -- a model cluster -------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    alive: bool = True
    healthy: bool = True
    state: str = "secondary"
    candidate: str | None = None
    # What the node last saw of the candidates (a watch may lag behind the server).
    seen: tuple[str, ...] | None = None


@dataclass
class Model:
    nodes: dict[str, Node]
    children: list[str] = field(default_factory=list)
    seq: int = 0
    handover: str = ""

    def view(self, n: Node) -> View:
        return View(me=n.name, state=n.state, candidate=n.candidate, children=n.seen, handover=self.handover,
                    healthy=n.healthy)

    def step(self, name: str, lagging: bool) -> None:
        n = self.nodes[name]
        if not n.alive:
            return
        if not lagging:
            n.seen = tuple(self.children)
        action = decide(self.view(n))
        if not n.healthy and action is not Action.RELINQUISH:
            return  # cut off: only local actions
        if action is Action.ENQUEUE:
            cand = f"{name}-{self.seq:010d}"
            self.seq += 1
            self.children.append(cand)
            n.candidate = cand
            n.seen = tuple(self.children)
        elif action is Action.DROP_GHOSTS:
            self.children = [c for c in self.children if not (c.startswith(f"{name}-") and c != n.candidate)]
            n.seen = tuple(self.children)
        elif action is Action.TAKEOVER:
            # The role acts on what it saw; the server's truth must agree that it is lowest
            # (a lagging view can only be behind on *other* candidates being added, never on the
            # lowest going away and coming back).
            n.state = "primary"
            if self.handover:
                self.handover = ""
        elif action is Action.RELINQUISH:
            n.state = "secondary"
        elif action is Action.STEP_BACK:
            self.children = [c for c in self.children if c != n.candidate]
            n.candidate = None
            n.seen = tuple(self.children)
        elif action is Action.CLEAR_HANDOVER:
            self.handover = ""

    def crash(self, name: str) -> None:
        n = self.nodes[name]
        # The guard tears the duties down with the process; the session ends with it.
        n.alive, n.state, n.candidate, n.seen = False, "secondary", None, None
        self.children = [c for c in self.children if not c.startswith(f"{name}-")]

    def restart(self, name: str) -> None:
        n = self.nodes[name]
        if not n.alive:
            self.nodes[name] = Node(name)

    def partition(self, name: str) -> None:
        self.nodes[name].healthy = False

    def expire(self, name: str) -> None:
        """The server expires a cut-off session; the timing rule (checks at T/6 with deadline T/3)
        guarantees the node noticed first, i.e. has stopped its duties."""
        n = self.nodes[name]
        if n.alive and not n.healthy and n.state not in PRIMARY_HOLDING:
            self.children = [c for c in self.children if not c.startswith(f"{name}-")]

    def heal(self, name: str) -> None:
        n = self.nodes[name]
        n.healthy = True
        if n.candidate not in self.children:
            n.candidate = None  # the adapter reports the new session

    def holders(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.alive and n.state in PRIMARY_HOLDING]

    def settle(self) -> None:
        for _ in range(50):
            before = (tuple(self.children), self.handover, tuple((n.state, n.candidate) for n in self.nodes.values()))
            for name in sorted(self.nodes):
                self.step(name, lagging=False)
            after = (tuple(self.children), self.handover, tuple((n.state, n.candidate) for n in self.nodes.values()))
            if before == after:
                return
        raise AssertionError("the election did not settle")


NAMES = ["hv1", "hv2", "hv3", "hv4"]
EVENTS = st.lists(
    st.tuples(st.sampled_from(["step", "step", "step", "lag", "handover", "crash", "restart", "partition",
                               "expire", "heal"]),
              st.sampled_from(NAMES)),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_model_never_two_holders_and_converges(events):
    model = Model({n: Node(n) for n in NAMES})
    for kind, name in events:
        if kind == "step":
            model.step(name, lagging=False)
        elif kind == "lag":
            model.step(name, lagging=True)
        elif kind == "handover":
            model.handover = name
        else:
            getattr(model, kind)(name)
        assert len(model.holders()) <= 1, (kind, name, model)
    for name in NAMES:
        model.heal(name)
    model.settle()
    holders = model.holders()
    alive = [n for n in model.nodes.values() if n.alive]
    assert len(holders) == (1 if alive else 0)
    if holders:
        # The holder is the lowest candidate, and any standing request was honoured or cleared.
        assert holder(model.children) == holders[0]
        assert model.handover in ("", holders[0])


def test_model_handover_round_robin():
    model = Model({n: Node(n) for n in NAMES})
    model.settle()
    for target in ["hv3", "hv2", "hv4", "hv1", "hv3"]:
        model.handover = target
        model.settle()
        assert model.holders() == [target]
        assert model.handover == ""
