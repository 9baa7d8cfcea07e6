"""`pvc vm volume add|remove`: a VM's disks as RBD volumes (rules in pvc.storage.vm_volumes).

Ceph is reached as `pvc storage` does: PVC_CEPH_CONF (default /etc/ceph/ceph.conf),
PVC_CEPH_CLIENT (client.admin), PVC_CEPH_KEYRING (default: the one ceph.conf names).
"""

from __future__ import annotations

import os

import typer

from pvc.cli.common import fail, run

app = typer.Typer(help="A VM's disks: RBD volumes (attached live when the VM runs).", no_args_is_help=True)

# How long `add`/`remove` wait for a running VM's node to attach or detach the disk.
LIVE_PATIENCE = 30.0


def ceph_from_env(required: bool = True):
    """The Ceph client the environment names; None (when not ``required``) if there is no config."""
    from pvc.storage.ceph import CephClient

    conf = os.environ.get("PVC_CEPH_CONF") or "/etc/ceph/ceph.conf"
    keyring = os.environ.get("PVC_CEPH_KEYRING", "")
    client = os.environ.get("PVC_CEPH_CLIENT") or "client.admin"
    if not os.path.isfile(conf):
        if not required:
            return None
        fail(f"no Ceph config at {conf}: set PVC_CEPH_CONF (and PVC_CEPH_KEYRING)")
    if keyring and not os.path.isfile(keyring):
        fail(f"no keyring at {keyring} (PVC_CEPH_KEYRING)")
    return CephClient(conf, client, keyring, float(os.environ.get("PVC_CEPH_TIMEOUT") or 30))


async def _follow(zk, dom, version: int, live: bool) -> str:
    """Wait (bounded) for the VM's node to apply the change; what to say about it."""
    import asyncio

    from pvc.cli.waiting import wait_for_vm
    from pvc.errors import PvcError
    from pvc.storage.vm_volumes import disks_applied

    if not live:
        return "the VM is not running: it applies at its next start"
    try:
        done = await asyncio.wait_for(wait_for_vm(zk, dom.uuid, "", version, [dom.node],
                                                  outcome=lambda d: (disks_applied(d)[0], "")), LIVE_PATIENCE)
    except asyncio.TimeoutError:
        return f"node {dom.node} has not applied it to the running VM yet (it will; `pvc vm info` shows when)"
    except PvcError as exc:  # its daemon is not running: carried out when it is back
        return str(exc)
    if disks_applied(done)[1]:
        raise PvcError(disks_applied(done)[1])
    return f"applied live on node {done.node}" if done.libvirt_state == "running" else \
        "the VM stopped meanwhile: it applies at its next start"


@app.command()
def add(
    vm: str = typer.Argument(..., help="VM name or UUID"),
    volume: str = typer.Argument(..., help="POOL/VOLUME (an existing RBD volume)"),
    target: str = typer.Option("", "--target", "-t", help="The guest's device (default: the first free vdX)."),
    shareable: bool = typer.Option(False, "--shareable", help="Mark the disk <shareable/> (a volume used by "
                                   "several VMs, each with a shareable disk)."),
):
    """Add an RBD volume to a VM as a disk; attached live if the VM runs, else at its next start."""
    from pvc.storage import vm_volumes

    ceph = ceph_from_env()

    async def work(zk):
        dom, version, dev, live = await vm_volumes.volume_add(zk, ceph, vm, volume, target, shareable)
        return dom, dev, await _follow(zk, dom, version, live)

    dom, dev, how = run(work)
    typer.echo(f"Added volume {volume} to VM {dom.name} as {dev}; {how}")


@app.command()
def remove(
    vm: str = typer.Argument(..., help="VM name or UUID"),
    volume: str = typer.Argument(..., help="POOL/VOLUME"),
):
    """Take an RBD volume out of a VM (detached live if the VM runs); the volume itself is kept."""
    from pvc.storage import vm_volumes

    async def work(zk):
        dom, version, live = await vm_volumes.volume_remove(zk, vm, volume)
        return dom, await _follow(zk, dom, version, live)

    dom, how = run(work)
    typer.echo(f"Removed volume {volume} from VM {dom.name}; {how}")
