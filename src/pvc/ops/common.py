"""What several operation groups share: empty params, a plain message, the Ceph handle."""

from __future__ import annotations

import os

import msgspec

from pvc.errors import InvalidInput
from pvc.ops.registry import Context


class NoParams(msgspec.Struct, kw_only=True):
    pass


class Message(msgspec.Struct, kw_only=True):
    message: str


def ceph(ctx: Context, required: bool = True):
    """The Ceph client: ``ctx.extras["ceph"]`` when the caller set one (pvcd, `pvc storage --ceph-conf`),
    else the one the environment names: PVC_CEPH_CONF (default /etc/ceph/ceph.conf), PVC_CEPH_CLIENT
    (client.admin), PVC_CEPH_KEYRING (default: the one ceph.conf names). None (when not ``required``)
    if there is no config."""
    if "ceph" in ctx.extras:
        return ctx.extras["ceph"]
    from pvc.storage.ceph import CephClient

    conf = os.environ.get("PVC_CEPH_CONF") or "/etc/ceph/ceph.conf"
    keyring = os.environ.get("PVC_CEPH_KEYRING", "")
    client = os.environ.get("PVC_CEPH_CLIENT") or "client.admin"
    if not os.path.isfile(conf):
        if not required:
            return None
        raise InvalidInput(f"no Ceph config at {conf}: set PVC_CEPH_CONF (and PVC_CEPH_KEYRING)")
    if keyring and not os.path.isfile(keyring):
        raise InvalidInput(f"no keyring at {keyring} (PVC_CEPH_KEYRING)")
    return CephClient(conf, client, keyring, float(os.environ.get("PVC_CEPH_TIMEOUT") or 30))
