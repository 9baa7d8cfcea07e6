"""Node operations (``node.*``): list, info, fence confirmation, the primary coordinator hand-over.

(The flush protocol, ``node.flush``/``node.ready``, is in pvc.ops.flush.)
"""

from __future__ import annotations

import msgspec

from pvc import election, fence_store, store
from pvc.errors import Conflict, InvalidInput, UsageError
from pvc.ops.common import Message, NoParams
from pvc.ops.registry import Context, operation
from pvc.ops.waiting import wait_for_primary
from pvc.schema import FenceState, Paths
from pvc.store import NodeView
from pvc.zk import NoNode


class NodeRef(msgspec.Struct, kw_only=True):
    node: str


class NodeInfo(NodeView, kw_only=True):
    """A node with where fencing it stands: ``fence`` is null when it was never declared dead."""

    fence: FenceState | None = None


@operation("node.list", "GET", "/node")
async def list_nodes(ctx: Context, params: NoParams) -> list[NodeView]:
    """List nodes with their states and resources."""
    return await store.list_nodes(ctx.zk)


@operation("node.info", "GET", "/node/{node}")
async def info(ctx: Context, params: NodeRef) -> NodeInfo:
    """One node, with its fence record (a dead node not yet fenced says why)."""
    view = await store.get_node(ctx.zk, params.node)
    fence, _ = await fence_store.read(ctx.zk, params.node)
    return NodeInfo(**msgspec.structs.asdict(view), fence=fence if fence.status else None)


class FenceParams(msgspec.Struct, kw_only=True):
    node: str
    confirm_powered_off: bool = False  # the operator made sure the node is off: pvc cannot check


@operation("node.fence", "POST", "/node/{node}/fence")
async def fence(ctx: Context, params: FenceParams) -> Message:
    """Declare a powered-off node fenced, so that the primary recovers its VMs elsewhere."""
    node = params.node
    if not params.confirm_powered_off:
        raise UsageError(
            f"`pvc node fence {node}` declares the node powered off (daemon_state fenced) and lets the primary "
            f"start its VMs on other nodes; it powers nothing off. Power {node} off, then run "
            f"`pvc node fence {node} --confirm-powered-off`")
    changed, message = await fence_store.declare_powered_off(ctx.zk, node)
    if changed and await store.get_setting(ctx.zk, "maintenance") == "true":
        message += " once maintenance is turned off (it is on: nothing is recovered automatically)"
    return Message(message=message)


class RoleParams(msgspec.Struct, kw_only=True):
    node: str
    wait: bool = False  # return once the hand-over is complete
    timeout: float = 60.0  # seconds the wait lasts at most


class RoleChange(msgspec.Struct, kw_only=True):
    """A primary hand-over: ``primary_before`` was primary when asked; ``target`` is asked to take the
    role (empty when nothing was to do: ``already``); ``primary_now`` is set when waited for."""

    node: str
    primary_before: str
    target: str = ""
    already: bool = False
    primary_now: str = ""


async def _candidates(zk) -> list[str]:
    try:
        return await zk.children(Paths.primary_election)
    except NoNode:
        return []


async def _primary(zk) -> str:
    return ((await zk.get_data(Paths.primary_node)) or b"").decode()


async def _hand_over(zk, params: RoleParams, current: str, target: str, away_from: str = "") -> RoleChange:
    """Ask the coordinators to hand the primary role to ``target``; with ``wait``, follow it."""
    await zk.put(Paths.primary_handover, target.encode())
    now = await wait_for_primary(zk, target, params.timeout, away_from=away_from) if params.wait else ""
    return RoleChange(node=params.node, primary_before=current, target=target, primary_now=now)


@operation("node.primary", "POST", "/node/{node}/primary")
async def primary(ctx: Context, params: RoleParams) -> RoleChange:
    """Hand the primary coordinator role to a node gracefully."""
    node, zk = params.node, ctx.zk
    view = await store.get_node(zk, node)
    if view.daemon_mode != "coordinator":
        raise InvalidInput(f"node {node} is not a coordinator (coordinators are set in each node's config)")
    if view.daemon_state != "run":
        raise Conflict(f"node {node} is {view.daemon_state}; only a running coordinator can take the primary role")
    if node not in {c.node for c in election.order(await _candidates(zk))}:
        raise Conflict(f"node {node} is not standing in the primary election (is its coordinator role running?)")
    current = await _primary(zk)
    if current == node:
        return RoleChange(node=node, primary_before=current, already=True, primary_now=current)
    return await _hand_over(zk, params, current, node)


@operation("node.secondary", "POST", "/node/{node}/secondary")
async def secondary(ctx: Context, params: RoleParams) -> RoleChange:
    """Make a node give the primary coordinator role up (to the next coordinator in line)."""
    node, zk = params.node, ctx.zk
    view = await store.get_node(zk, node)
    if view.daemon_mode != "coordinator":
        raise InvalidInput(f"node {node} is not a coordinator")
    current = await _primary(zk)
    if current != node:
        return RoleChange(node=node, primary_before=current, already=True, primary_now=current)
    target = election.handover_target(await _candidates(zk), node)
    if not target:
        raise Conflict(f"no other coordinator is running to take the primary role from {node}")
    return await _hand_over(zk, params, current, target, away_from=node)
