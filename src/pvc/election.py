"""The primary election, the pure core: who holds the primary role, and what a coordinator does next.

The recipe (docs/schema.md, "Coordinators"): every running coordinator has one ephemeral sequential
candidate ``/election/primary/<node>-<seq>``; the lowest sequence holds the role. A coordinator
starts its primary duties only while it holds the lowest candidate, and gives the role up by
stopping its duties *before* deleting its candidate, so the next holder can only start once the
previous one has stopped: no two nodes ever carry the duties at once.

A graceful handover to node T (``/election/handover`` = T): a lowest candidate that is not T steps
back (primary: relinquish, then re-enqueue at the end; secondary: re-enqueue) while T has a
candidate; after at most one step back per coordinator T is lowest and takes over, clearing the
request. A request naming a node without a candidate is stale and is cleared by whoever takes over.

``decide`` is a pure function of what a coordinator knows; the coordinator role (the I/O) runs it
after every change and carries out the one action it returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PRIMARY_HOLDING = ("primary", "takeover")  # states in which a node may carry duties


class Action(enum.Enum):
    NOTHING = "nothing"
    ENQUEUE = "enqueue"  # create our candidate
    DROP_GHOSTS = "drop_ghosts"  # delete candidates of ours that are not the current one
    TAKEOVER = "takeover"  # start the duties (and clear the handover request)
    RELINQUISH = "relinquish"  # stop the duties
    STEP_BACK = "step_back"  # delete our candidate (then enqueue again, at the end)
    CLEAR_HANDOVER = "clear_handover"  # a request that is satisfied already


@dataclass(frozen=True)
class Candidate:
    name: str  # the znode name, <node>-<seq>
    node: str
    seq: str


def parse_candidate(name: str) -> Candidate | None:
    node, sep, seq = name.rpartition("-")
    if not sep or not node or not seq.isdigit():
        return None
    return Candidate(name, node, seq)


def order(children: list[str]) -> list[Candidate]:
    """Candidates by sequence number, holder first (unparseable children are ignored)."""
    parsed = [c for c in map(parse_candidate, children) if c]
    return sorted(parsed, key=lambda c: (len(c.seq), c.seq))


def holder(children: list[str]) -> str:
    """The node that holds the primary role according to the candidates ("" = none)."""
    ordered = order(children)
    return ordered[0].node if ordered else ""


@dataclass(frozen=True)
class View:
    me: str
    state: str  # our coordinator_state: secondary | takeover | primary | relinquish
    candidate: str | None  # our candidate's znode name (None: not enqueued)
    children: tuple[str, ...] | None  # the candidates as last seen (None: not known yet)
    handover: str  # the requested target ("" = none)
    healthy: bool  # our election session answered within its deadline
    stopping: bool = False  # the daemon is shutting down


def decide(view: View) -> Action:
    holding = view.state in PRIMARY_HOLDING
    if not view.healthy:
        # We cannot know whether we still hold the role: stop the duties at once.
        return Action.RELINQUISH if holding else Action.NOTHING
    if view.stopping:
        if holding:
            return Action.RELINQUISH
        return Action.STEP_BACK if view.candidate else Action.NOTHING
    if view.children is None:
        return Action.NOTHING
    ordered = order(list(view.children))
    names = [c.name for c in ordered]
    if view.candidate is None or view.candidate not in names:
        # Not enqueued, or our session ended and took the candidate along.
        return Action.RELINQUISH if holding else Action.ENQUEUE
    if any(c.node == view.me and c.name != view.candidate for c in ordered):
        return Action.DROP_GHOSTS  # from an earlier daemon on this node, or a retried create
    lowest = ordered[0]
    if lowest.name != view.candidate:
        return Action.RELINQUISH if holding else Action.NOTHING
    target = view.handover
    if target and target != view.me and any(c.node == target for c in ordered):
        return Action.RELINQUISH if holding else Action.STEP_BACK
    if view.state != "primary":
        return Action.TAKEOVER
    if target:
        return Action.CLEAR_HANDOVER
    return Action.NOTHING


def handover_target(children: list[str], away_from: str) -> str:
    """The coordinator that takes over when ``away_from`` gives the role up: the next in line."""
    for c in order(children):
        if c.node != away_from:
            return c.node
    return ""


def single_holder(states: dict[str, str]) -> bool:
    """At most one node is in a duty-holding state (what tests and monitoring check)."""
    return sum(1 for s in states.values() if s in PRIMARY_HOLDING) <= 1
