"""The cluster's ZooKeeper ACL: the digest ids every znode of the cluster grants full rights to.

The list lives at ``zk.ACL_PATH`` (every client with a credential follows it, so its creates carry
it); ``apply`` writes the list, then gives every node the cluster owns that ACL. The cluster owns
every top-level node but ZooKeeper's own ``/zookeeper``; the root ``/`` stays ZooKeeper's.
Rotating a credential is add, switch configs, remove (docs/operations.md).
"""

from __future__ import annotations

import msgspec

from pvc.errors import Conflict, InvalidInput, NotFound
from pvc.zk import ACL_PATH, ZK, NoNode, check_credential, digest_acl, digest_id

NOT_OURS = {"zookeeper"}


class AclReport(msgspec.Struct, kw_only=True):
    users: list[str]  # the users the ACL lists (one per credential; the same user may appear twice)
    znodes: int = 0  # nodes given the ACL just now


async def read_ids(zk: ZK) -> list[str]:
    try:
        data = await zk.get_data(ACL_PATH)
    except NoNode:
        data = None
    return msgspec.json.decode(data, type=list[str]) if data else []


def _users(ids: list[str]) -> list[str]:
    return [i.partition(":")[0] for i in ids]


async def apply(zk: ZK, ids: list[str]) -> AclReport:
    """Make ``ids`` the cluster's ACL: the list first (clients follow it from then on), then every node."""
    data = msgspec.json.encode(sorted(set(ids)))
    zk.use_cluster_acl(data)
    await zk.put(ACL_PATH, data)
    roots = [f"/{child}" for child in sorted(await zk.children("/")) if child not in NOT_OURS]
    count = await zk.set_acl_tree(roots, digest_acl(ids))
    return AclReport(users=_users(sorted(set(ids))), znodes=count)


async def protect(zk: ZK) -> AclReport | None:
    """``pvc init``: give every node of the cluster its ACL (the listed credentials plus the one
    connected with); None when connected without a credential (nothing can be protected)."""
    if not zk.credential:
        return None
    return await apply(zk, [*await read_ids(zk), digest_id(zk.credential)])


async def show(zk: ZK) -> AclReport:
    return AclReport(users=_users(await read_ids(zk)))


async def add(zk: ZK, credential: str) -> AclReport:
    new = digest_id(check_credential(credential))
    if not zk.credential:
        raise InvalidInput("connect with the cluster's credential (USER:PASSWORD@HOST:PORT) to add another")
    ids = list(dict.fromkeys([*await read_ids(zk), digest_id(zk.credential)]))
    if new in ids:
        raise Conflict(f"the cluster's ACL already lists this credential of user {_users([new])[0]!r}")
    return await apply(zk, [*ids, new])


async def remove(zk: ZK, credential: str) -> AclReport:
    old = digest_id(check_credential(credential))
    if zk.credential and old == digest_id(zk.credential):
        raise Conflict("cannot remove the credential this command connects with: connect with the new one")
    ids = await read_ids(zk)
    if old not in ids:
        raise NotFound(f"the cluster's ACL lists no such credential of user {_users([old])[0]!r}")
    # Hold the old credential too, so a node created with only the old ACL (by a client that had not
    # seen the list change yet) can still be given the new one.
    await zk.add_credential(credential)
    return await apply(zk, [i for i in ids if i != old])
