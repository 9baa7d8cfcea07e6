"""Planning and pacing a node flush and a node ready (pure).

Flush: every VM assigned to the node leaves it, except disabled ones (kept out of flushes: they
stay, off, on their node). Running VMs migrate; the others are handed over by the node once its
libvirt confirms them off. Targets come from the same placement as everywhere else, with each
planned VM counted against its target so a flush spreads VMs instead of piling them on the best
node at the start. Ready: every VM whose previous_node is this node comes home (disabled ones too
stay where they are), as far as the node has room for it.

Memory is counted as committed, not as last reported: a node's keepalive counts only the VMs its
libvirt runs, so VMs on their way to it (migrating there, handed over and starting, or planned by
this very flush) are added until its keepalive lists them. Without that, a flush moving several VMs
at once, or a flush and a migration side by side, could each fill the same free memory.

Pacing (``dispatch``): the daemon follows the plan, starting migrations while at most ``limit`` are
in flight cluster-wide, per source and per target. Before one starts, its target is checked against
the cluster as it is then; a target that no longer fits (flush requested there, memory taken
meanwhile) is replaced with the same placement, everything else keeps the plan. The preview
(`pvc node flush --dry-run`) shows ``plan_flush`` of the same inputs, so it is the plan followed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from pvc import placement
from pvc.errors import PvcError
from pvc.schema import WANTS_RUNNING, Domain


@dataclass(frozen=True)
class Move:
    uuid: str
    name: str
    target: str  # "" when there is nowhere to go
    live: bool  # wanted running: migrate; otherwise a hand-over once it is confirmed off
    reason: str = ""  # why target is "" (no eligible node, or not enough room at home)
    source: str = ""  # the node it leaves
    memory_mib: int = 0  # what it takes on its target (0 when it is not running)
    vcpus: int = 0
    # How the target was chosen (flush): the selector, and the target's memory available before
    # this VM, after everything already on its way there.
    selector: str = ""
    available_mib: int = 0
    node_limit: tuple[str, ...] = ()
    needs_storage: bool = False


@dataclass(frozen=True)
class Transfer:
    """A migration in flight (a running VM on its way from ``source`` to ``target``)."""

    uuid: str
    source: str
    target: str


@dataclass(frozen=True)
class Dispatch:
    start: list[Move]  # begin now: the target is confirmed (or re-chosen) and a slot is free
    unmovable: list[Move]  # nowhere to go any more (``target`` "", ``reason`` says why)
    waiting: list[Move]  # still pending: a limit is reached (target kept, possibly re-chosen)


def _heading(d: Domain) -> str:
    """The node a VM takes memory on once its current request is carried out ("" for none)."""
    if d.state == "migrate" and d.target_node:
        return d.target_node
    return d.node if d.state in WANTS_RUNNING else ""


def committed(nodes: list[placement.Candidate], domains: Iterable[Domain],
              moving: Iterable[Move] = ()) -> dict[str, placement.Candidate]:
    """Each node by name, with the running VMs on their way to it counted as allocated: those whose
    record heads there (or a ``moving`` entry, which wins over the record) that its keepalive does
    not yet list as running (the keepalive's allocation counts those already)."""
    pool = {c.name: c for c in nodes}
    heading = {d.uuid: (_heading(d), d.memory_mib, d.vcpus) for d in domains}
    for m in moving:
        if m.live and m.target:
            heading[m.uuid] = (m.target, m.memory_mib, m.vcpus)
    extra: dict[str, list[int]] = {}
    for uuid, (target, memory, vcpus) in heading.items():
        c = pool.get(target)
        if c is not None and uuid not in c.running:
            add = extra.setdefault(target, [0, 0, 0])
            add[0] += memory
            add[1] += vcpus
            add[2] += 1
    for name, (memory, vcpus, count) in extra.items():
        pool[name] = _add(pool[name], memory, vcpus, count)
    return pool


def _add(c: placement.Candidate, memory: int, vcpus: int, count: int) -> placement.Candidate:
    return msgspec.structs.replace(c, memory_allocated_mib=c.memory_allocated_mib + memory,
                                   vcpus_allocated=c.vcpus_allocated + vcpus, domains_count=c.domains_count + count)


def _count(pool: dict[str, placement.Candidate], m: Move, sign: int = 1) -> None:
    if m.live and m.target in pool:
        pool[m.target] = _add(pool[m.target], sign * m.memory_mib, sign * m.vcpus, sign)


def _place(pool: dict[str, placement.Candidate], m: Move) -> Move:
    """``m`` with a target chosen from ``pool`` (its memory counted there), or with the reason none fits."""
    try:
        target = placement.choose_node(list(pool.values()), selector=m.selector,
                                       memory_mib=m.memory_mib if m.live else 0, exclude=m.source,
                                       node_limit=list(m.node_limit), needs_storage=m.needs_storage)
    except PvcError as exc:
        # Each node's own refusal too: the preview and the flush's report say why, node by node.
        why = [placement.refusal(c, m.memory_mib, m.needs_storage) for c in pool.values()
               if c.name != m.source and (not m.node_limit or c.name in m.node_limit)]
        detail = "; ".join(w for w in why if w)
        return dataclasses.replace(m, target="", reason=f"{exc}" + (f": {detail}" if detail else ""), available_mib=0)
    placed = dataclasses.replace(m, target=target, reason="", available_mib=pool[target].memory_available_mib)
    _count(pool, placed)
    return placed


def plan_flush(domains: list[Domain], me: str, nodes: list[placement.Candidate], default_selector: str,
               needs_storage: frozenset[str] = frozenset()) -> list[Move]:
    """``domains``: every VM the cluster has (those heading elsewhere count against their targets);
    ``needs_storage``: UUIDs of VMs with RBD disks (they go only to nodes that reach Ceph)."""
    planned = sorted((d for d in domains if d.node == me and d.state != "disable"), key=lambda d: d.name)
    # The planned VMs count where the plan puts them, not where their records point now.
    skip = {d.uuid for d in planned}
    pool = committed(nodes, [d for d in domains if d.uuid not in skip])
    moves = []
    for dom in planned:
        live = dom.state in WANTS_RUNNING
        move = Move(dom.uuid, dom.name, "", live, source=me, memory_mib=dom.memory_mib if live else 0,
                    vcpus=dom.vcpus if live else 0, selector=dom.selector or default_selector,
                    node_limit=tuple(dom.node_limit), needs_storage=dom.uuid in needs_storage)
        moves.append(_place(pool, move))
    return moves


def plan_ready(domains: list[Domain], me: str, nodes: list[placement.Candidate],
               needs_storage: frozenset[str] = frozenset()) -> list[Move]:
    """VMs come home as far as this node has room for them (a VM that does not fit stays where it is)."""
    planned = sorted((d for d in domains if d.previous_node == me and d.node != me and d.state != "disable"),
                     key=lambda d: d.name)
    skip = {d.uuid for d in planned}
    pool = committed(nodes, [d for d in domains if d.uuid not in skip])
    moves = []
    for d in planned:
        live = d.state in WANTS_RUNNING
        move = Move(d.uuid, d.name, me, live, source=d.node, memory_mib=d.memory_mib if live else 0,
                    vcpus=d.vcpus if live else 0, needs_storage=d.uuid in needs_storage)
        if me in pool:
            why = placement.capacity_refusal(pool[me], move.memory_mib, move.needs_storage)
            if why:
                move = dataclasses.replace(move, target="", reason=f"it stays on {d.node}: {why}")
            else:
                move = dataclasses.replace(move, available_mib=pool[me].memory_available_mib)
                _count(pool, move)
        moves.append(move)
    return moves


def in_flight(domains: Iterable[Domain], ours: Iterable[Move] = ()) -> list[Transfer]:
    """Migrations in flight cluster-wide: records asking a running VM to move, and ``ours`` (moves
    this operation started and still follows: a handed-over VM is starting on its target)."""
    found = {d.uuid: Transfer(d.uuid, d.node, d.target_node) for d in domains
             if d.state == "migrate" and d.target_node and d.target_node != d.node}
    for m in ours:
        if m.live:
            found[m.uuid] = Transfer(m.uuid, m.source, m.target)
    return list(found.values())


def unsettled(domains: Iterable[Domain], nodes: list[placement.Candidate]) -> set[str]:
    """The VMs still on their way: migrating, or heading to a node whose keepalive does not list
    them running yet. A flush follows these (and only these) of the VMs it does not move."""
    running = {c.name: c.running for c in nodes}
    return {d.uuid for d in domains
            if (d.state == "migrate" and d.target_node) or (_heading(d) and d.uuid not in running.get(_heading(d), ()))}


def dispatch(pending: list[Move], *, active: list[Move], domains: Iterable[Domain],
             nodes: list[placement.Candidate], limit: int, landed: list[Move] = (), home: str = "") -> Dispatch:
    """Which pending moves (in plan order) start now. ``active``: this operation's moves in flight;
    ``landed``: its moves done whose target may not list them running yet; ``domains``: other VMs
    on their way (``unsettled``); ``limit``: migrations at once cluster-wide, per source and per
    target (a hand-over of a VM that is not running takes no slot). ``home`` (ready): the fixed
    target, whose room only is checked; a flush's target that no longer fits is re-chosen, or the
    VM is unmovable."""
    domains = list(domains)
    limit = max(1, limit)
    pool = committed(nodes, domains, [*landed, *active])
    transfers = in_flight(domains, active)
    total = len(transfers)
    sources = Counter(t.source for t in transfers)
    targets = Counter(t.target for t in transfers)
    # First the moves whose planned target still fits them, in plan order, each counted there (a
    # pending move keeps its room while it waits for a slot); then the others get what is left.
    placed: dict[str, Move] = {}
    for m in pending:
        if home:
            m = dataclasses.replace(m, target=home, reason="")
        c = pool.get(m.target)
        if c is not None and not (placement.capacity_refusal(c, m.memory_mib, m.needs_storage) if home
                                  else placement.refusal(c, m.memory_mib, m.needs_storage)):
            _count(pool, m)
            placed[m.uuid] = m
    start, unmovable, waiting = [], [], []
    for m in pending:
        if m.uuid in placed:
            m = placed[m.uuid]
        elif home:
            why = (placement.capacity_refusal(pool[home], m.memory_mib, m.needs_storage) if home in pool
                   else f"node {home} is gone")
            unmovable.append(dataclasses.replace(m, target="", reason=f"it stays on {m.source}: {why}"))
            continue
        else:
            m = _place(pool, m)  # counted on its new target, if any
            if not m.target:
                unmovable.append(m)
                continue
        # Per source and per target as well as in all (the same N today, so the total binds
        # first; kept apart so that each stays true if they ever differ).
        if m.live and (total >= limit or sources[m.source] >= limit or targets[m.target] >= limit):
            waiting.append(m)
            continue
        if m.live:
            total += 1
            sources[m.source] += 1
            targets[m.target] += 1
        start.append(m)
    return Dispatch(start, unmovable, waiting)
