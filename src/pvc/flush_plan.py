"""Planning a node flush and a node ready (pure).

Flush: every VM assigned to the node leaves it, except disabled ones (kept out of flushes: they
stay, off, on their node). Running VMs migrate; the others are handed over by the node once its
libvirt confirms them off. Targets come from the same placement as everywhere else, with each
planned VM counted against its target so a flush spreads VMs instead of piling them on the best
node at the start. Ready: every VM whose previous_node is this node comes home (disabled ones too
stay where they are).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pvc import placement
from pvc.errors import PvcError
from pvc.schema import WANTS_RUNNING, Domain


@dataclass(frozen=True)
class Move:
    uuid: str
    name: str
    target: str  # "" when there is nowhere to go
    live: bool  # wanted running: migrate; otherwise a hand-over once it is confirmed off
    reason: str = ""  # why target is "" (no eligible node)


def plan_flush(domains: list[Domain], me: str, nodes: list[placement.Candidate], default_selector: str,
               needs_storage: frozenset[str] = frozenset()) -> list[Move]:
    """``needs_storage``: UUIDs of VMs with RBD disks (they go only to nodes that reach Ceph)."""
    pool = {c.name: c for c in nodes}
    moves = []
    for dom in sorted((d for d in domains if d.node == me and d.state != "disable"), key=lambda d: d.name):
        live = dom.state in WANTS_RUNNING
        try:
            target = placement.choose_node(
                list(pool.values()),
                selector=dom.selector or default_selector,
                memory_mib=dom.memory_mib if live else 0,
                exclude=me,
                node_limit=dom.node_limit,
                needs_storage=dom.uuid in needs_storage,
            )
        except PvcError as exc:
            moves.append(Move(dom.uuid, dom.name, "", live, str(exc)))
            continue
        c = pool[target]
        pool[target] = dataclasses.replace(
            c,
            memory_allocated_mib=c.memory_allocated_mib + (dom.memory_mib if live else 0),
            vcpus_allocated=c.vcpus_allocated + (dom.vcpus if live else 0),
            domains_count=c.domains_count + (1 if live else 0),
        )
        moves.append(Move(dom.uuid, dom.name, target, live))
    return moves


def plan_ready(domains: list[Domain], me: str) -> list[Move]:
    return [
        Move(d.uuid, d.name, me, d.state in WANTS_RUNNING)
        for d in sorted(domains, key=lambda d: d.name)
        if d.previous_node == me and d.node != me and d.state != "disable"
    ]
