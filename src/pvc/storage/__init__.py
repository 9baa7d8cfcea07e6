"""Storage: VM disks as RBD volumes on a Ceph cluster.

- ``model``: the pure part (sizes, names, records, reading the Ceph CLIs' JSON, RBD disks in a
  domain XML);
- ``ceph``: the one adapter to Ceph (its CLIs, every call bounded in time);
- ``ops``: the operations (pools, volumes, snapshots, images) that the CLI calls.

``volume_users(zk, pool, name)`` is the one answer to "which VMs use this volume".
"""

from __future__ import annotations


async def volume_users(zk, pool: str, name: str) -> list:
    """The VMs (``pvc.schema.Domain``) whose domain XML uses ``pool/name`` as a disk."""
    from pvc.storage.ops import volume_users as users

    return await users(zk, pool, name)
