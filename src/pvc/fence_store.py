"""Fence records in ZooKeeper (``/nodes/<name>/fence``) and the operator's fence operation.

The decisions are in ``pvc.fencing`` (pure); this module reads and writes. Every write that
changes where fencing stands is one transaction that also creates and deletes the node's ``alive``
key, so it fails if the node's daemon is back: a node whose daemon runs is never declared off.
"""

from __future__ import annotations

import time

import msgspec

from pvc import events, fencing, store
from pvc.errors import Conflict, InvalidInput, NotFound, PvcError
from pvc.schema import WANTS_RUNNING, FenceState, Paths
from pvc.zk import ZK, BadVersion, NodeExists, NoNode


def path(node: str) -> str:
    return Paths.node_key(node, "fence")


def decode(data: bytes | None) -> FenceState:
    if not data:
        return FenceState()
    try:
        return FenceState.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return FenceState(message="unreadable fence record")


async def read(zk: ZK, node: str) -> tuple[FenceState, int]:
    """The record and its version (-1: none yet)."""
    try:
        data, version = await zk.get(path(node))
    except NoNode:
        return FenceState(), -1
    return decode(data), version


async def read_many(zk: ZK, nodes: list[str]) -> dict[str, FenceState]:
    return {n: decode(v) for n, v in zip(nodes, await zk.get_many(path(n) for n in nodes))}


def put_op(node: str, record: FenceState, version: int) -> tuple:
    """A transaction operation writing the record only if nobody else wrote it since ``version``."""
    if version < 0:
        return ("create", path(node), record.encode())
    return ("set", path(node), record.encode(), version)


def not_back_ops(node: str) -> list[tuple]:
    """Fails the transaction with NodeExists if the node's daemon holds its presence key."""
    alive = Paths.node_key(node, "alive")
    return [("create", alive, b""), ("delete", alive)]


async def declare_powered_off(zk: ZK, node: str) -> tuple[bool, str]:
    """`pvc node fence NODE --confirm-powered-off`: the operator vouches that the node is off; the
    node becomes ``fenced`` (and ``flushed``) and the primary recovers its VMs. Returns (changed,
    message); refused (InvalidInput/Conflict) while the node's daemon is alive."""
    if not await zk.exists(Paths.node(node)):
        raise NotFound(f"unknown node {node!r}")
    for _ in range(5):
        alive = await zk.exists(Paths.node_key(node, "alive"))
        if reason := fencing.operator_fence_refusal(node, alive=alive):
            raise Conflict(reason)
        try:
            state, state_version = await zk.get(Paths.node_key(node, "daemon_state"))
        except NoNode:
            state, state_version = b"", -1
        if state == b"fenced":
            return False, f"node {node} is already fenced; nothing changed"
        record, version = await read(zk, node)
        new = fencing.confirmed_off(record, "operator", time.time(), "operator")
        state_op = (("set", Paths.node_key(node, "daemon_state"), b"fenced", state_version) if state_version >= 0
                    else ("create", Paths.node_key(node, "daemon_state"), b"fenced"))
        try:
            await zk.multi([*not_back_ops(node), state_op,
                            ("set", Paths.node_key(node, "domain_state"), b"flushed"), put_op(node, new, version)])
        except NodeExists as exc:
            if await zk.exists(Paths.node_key(node, "alive")):
                raise Conflict(fencing.operator_fence_refusal(node, alive=True)) from None
            raise InvalidInput(f"cannot fence node {node}: {exc}") from None
        except BadVersion:
            continue  # the primary wrote meanwhile: look again
        except NoNode:
            raise InvalidInput(f"node {node} never finished registering (no domain_state); nothing to fence") from None
        wanted = sum(1 for d in await store.list_domains(zk) if d.node == node and d.state in WANTS_RUNNING)
        try:  # the fence is written; a missing event-log entry must not report it as failed
            await events.record(zk, "node_fenced", f"node {node} declared powered off by an operator "
                                "(pvc node fence --confirm-powered-off); its VMs are recovered on other nodes",
                                severity="warning", node=node)
        except PvcError:
            pass
        return True, (f"node {node} declared powered off (daemon_state fenced, domain_state flushed); "
                      f"the primary recovers its {wanted} VM(s) wanted running on other nodes")
    raise Conflict(f"node {node} is being changed concurrently; try again")
