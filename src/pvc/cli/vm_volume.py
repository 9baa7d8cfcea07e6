"""`pvc vm volume add|remove`: a VM's disks as RBD volumes (operations in pvc.ops.vm_volume).

Ceph is reached as `pvc storage` does: PVC_CEPH_CONF (default /etc/ceph/ceph.conf),
PVC_CEPH_CLIENT (client.admin), PVC_CEPH_KEYRING (default: the one ceph.conf names).
"""

from __future__ import annotations

import typer

from pvc.cli.common import run_ops
from pvc.cli.completion import VM_ARG

app = typer.Typer(help="A VM's disks: RBD volumes (attached live when the VM runs).", no_args_is_help=True)


@app.command()
def add(
    vm: str = VM_ARG,
    volume: str = typer.Argument(..., help="POOL/VOLUME (an existing RBD volume)"),
    target: str = typer.Option("", "--target", "-t", help="The guest's device (default: the first free vdX)."),
    shareable: bool = typer.Option(False, "--shareable", help="Mark the disk <shareable/> (a volume used by "
                                   "several VMs, each with a shareable disk)."),
):
    """Add an RBD volume to a VM as a disk; attached live if the VM runs, else at its next start."""
    from pvc.ops.vm_volume import VolumeAdd

    done = run_ops(lambda b: b.call("vm.volume_add", VolumeAdd(vm=vm, volume=volume, target=target, shareable=shareable)))
    typer.echo(f"Added volume {volume} to VM {done.vm.name} as {done.device}; {done.applied}")


@app.command()
def remove(
    vm: str = VM_ARG,
    volume: str = typer.Argument(..., help="POOL/VOLUME"),
):
    """Take an RBD volume out of a VM (detached live if the VM runs); the volume itself is kept."""
    from pvc.ops.vm_volume import VolumeRef

    done = run_ops(lambda b: b.call("vm.volume_remove", VolumeRef(vm=vm, volume=volume)))
    typer.echo(f"Removed volume {volume} from VM {done.vm.name}; {done.applied}")
